/* io_llama2c.c: (in progress) */
#include "internal.h"
