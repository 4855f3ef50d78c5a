/* io_gguf.c: (in progress) */
#include "internal.h"
