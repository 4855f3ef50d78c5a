/* matvec.c: (in progress) */
#include "internal.h"
