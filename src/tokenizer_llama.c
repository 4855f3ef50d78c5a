/* tokenizer_llama.c: (in progress) */
#include "internal.h"
