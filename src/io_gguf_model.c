/* io_gguf_model.c: (in progress) */
#include "internal.h"
