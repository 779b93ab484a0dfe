/* repro-conc-data.h: written by kvm-memmodel; numbers and escaped string literals only. */
#define CONC_NREQ 1
#define CONC_NNODES 2
#define CONC_NOUTCOMES 1
static const int conc_nthreads = 1;
static const uint64_t conc_vcpu[] = { CONC_VMM };
static const uint32_t conc_count[] = { 1 };
static const struct kmm_req conc_reqs[] = {
  { 14, 0, { 0x10ULL } }
};
static const struct text conc_calls[] = {
  TEXT("check_extension(16)")
};
static const struct expect conc_expect[] = {
  { .kind = E_OK, .has_value = 1, .value = 0x1ULL }
};
static const struct text conc_expect_text[] = {
  TEXT("ok 1")
};
static const uint32_t conc_expect_req[] = { 0 };
static const uint64_t conc_node_done[] = { 0x0ULL, 0x1ULL };
static const uint32_t conc_node_first[] = { 0, 1, 1 };
static const struct conc_edge conc_edges[] = {
  { 0, 0, -1, 1 }
};
static const uint32_t conc_final = 1;
static const long conc_attempts = 10;
