/* repro-data.h: written by kvm-memmodel export --c; numbers and escaped string literals only. */
static const struct text repro_title = TEXT("kvm-memmodel reproducer (the default data: KVM_CHECK_EXTENSION(KVM_CAP"
    "_SYNC_MMU))");
static const struct text repro_config = TEXT("series none (upstream)");
static const struct text repro_mutant = TEXT("");
static const struct text repro_messages[] = {
  TEXT("")
};
static const size_t repro_nmessages = 0;
static const struct step steps[] = {
  { { 14, 0, { 0x10ULL } },
    { .kind = E_OK, .has_value = 1, .value = 0x1ULL },
    TEXT("check_extension(16)"),
    TEXT("ok 1") },
};
