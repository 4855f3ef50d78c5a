/* export.c: (in progress) */
