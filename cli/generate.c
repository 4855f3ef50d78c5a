/* generate.c: (in progress) */
