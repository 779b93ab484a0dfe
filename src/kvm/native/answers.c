/*
 * answers.c (the batch helper only): the responses of the batch being served, kept in a file the
 * harness shares (helper.ts passes it as a descriptor) and written up the response pipe in one write
 * when the batch is done, so the harness wakes once per batch, not once per request.
 *
 * The file: a header {u32 ANSWERS_MAGIC, u32 batch, u32 count, u32 reserved, u64 bytes}, then
 * `count` responses (struct kmm_resp, then datalen bytes), `bytes` in all; `batch` numbers the
 * batches this helper began (1 for its first), so the harness never takes an earlier batch's
 * answers for the one in flight. A response is copied in before count and bytes move past it, so a
 * helper that dies mid-batch (a crash, SIGKILL: the file's pages outlive it) leaves every response
 * it finished there, and the harness reads them and the index it died on.
 * Without a shared file (stdin/stdout use) the same buffer is private memory.
 */
#define ANSWERS_MAGIC 0x414d4d4bu /* "KMMA" */

struct ans_header { uint32_t magic, batch, count, reserved; uint64_t bytes; };
static uint8_t *ans_map;
static size_t ans_cap;
static int ans_fd = -1;

static struct ans_header *ans_head(void) { return (struct ans_header *)ans_map; }

static int ans_init(int fd) {
  ans_fd = fd;
  ans_cap = 1u << 20;
  if (fd >= 0 && ftruncate(fd, (off_t)ans_cap) < 0) return -1;
  void *p = fd >= 0 ? mmap(NULL, ans_cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                    : mmap(NULL, ans_cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  ans_map = p;
  ans_head()->magic = ANSWERS_MAGIC;
  return 0;
}

static void ans_begin(void) {
  ans_head()->count = 0;
  ans_head()->bytes = 0;
  __atomic_store_n(&ans_head()->batch, ans_head()->batch + 1, __ATOMIC_RELEASE);
}

/* Add one response (and its data); -1 when the buffer cannot grow. */
static int ans_add(const struct kmm_resp *r, const uint8_t *data) {
  size_t len = sizeof *r + (r->datalen && data ? r->datalen : 0);
  size_t at = sizeof(struct ans_header) + ans_head()->bytes;
  if (at + len > ans_cap) {
    size_t cap = ans_cap;
    while (at + len > cap) cap *= 2;
    if (ans_fd >= 0 && ftruncate(ans_fd, (off_t)cap) < 0) return -1;
    void *p = mremap(ans_map, ans_cap, cap, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) return -1;
    ans_map = p;
    ans_cap = cap;
  }
  memcpy(ans_map + at, r, sizeof *r);
  if (len > sizeof *r) memcpy(ans_map + at + sizeof *r, data, r->datalen);
  /* The response is in before it is counted (a reader after a death sees whole responses only). */
  __atomic_store_n(&ans_head()->bytes, ans_head()->bytes + len, __ATOMIC_RELEASE);
  __atomic_store_n(&ans_head()->count, ans_head()->count + 1, __ATOMIC_RELEASE);
  return 0;
}

/* The batch's responses up the pipe, in one write. */
static int ans_flush(int out) {
  return ans_head()->bytes ? write_full(out, ans_map + sizeof(struct ans_header), ans_head()->bytes) : 0;
}
