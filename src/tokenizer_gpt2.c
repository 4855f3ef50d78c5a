/* tokenizer_gpt2.c: (in progress) */
#include "internal.h"
