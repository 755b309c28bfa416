# Where the tests' external inputs are (sourced by tests/cli/*.sh; named
# .bash so the *.sh glob does not run it as a test).
#
# The shared fixtures (tiny real-architecture checkpoints with transformers
# references) live outside the repository; CMake passes their path as
# MK_FIXTURES (configure with -DMK_FIXTURES=DIR; default ../shared/fixtures).
# A test that needs them calls need_fixtures, which skips it (exit 77, shown
# by ctest as "Skipped", with the reason on stdout) when they are absent.
# The trained demo model is also embedded in the repository
# (models/tiny-qwen35moe, the same files as the fixture): TINYM points at the
# fixture when present, else at the embedded copy, so its tests always run.
FX=${MK_FIXTURES:-}
if [ -n "$FX" ] && [ -d "$FX/tiny-qwen35moe" ]; then
    TINYM=$FX/tiny-qwen35moe
else
    TINYM=${MK_SRC:?MK_SRC: the source tree}/models/tiny-qwen35moe
fi

need_fixtures() {
    if [ -z "$FX" ] || [ ! -d "$FX" ]; then
        echo "skip: the shared fixtures are not at '${FX}' (configure with -DMK_FIXTURES=DIR)"
        exit 77
    fi
}
