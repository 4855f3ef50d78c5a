/* tsan_canary.c: a deliberate data race between OpenMP threads. `make tsan`
 * expects ThreadSanitizer to report it, which proves that the TSan + Archer
 * setup sees races across OpenMP threads before it vouches for our code. */
#include <stdio.h>

int main(void) {
    long sum = 0;
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 100000; i++) sum += i; /* unsynchronised on purpose */
    printf("sum %ld\n", sum);
    return 0;
}
