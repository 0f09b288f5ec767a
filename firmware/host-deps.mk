# Included by the host builds (firmware/tests, firmware/fuzz), which define B (their build
# directory), PY (a Python), FW (this directory) and WB_DEPS (the pinned-sources cache).
#
# The pinned third-party sources (zcbor, mbedTLS) must exist before make picks its rules (a
# pattern rule whose source is missing does not apply, and a target would then be "made" with
# nothing built). So they are fetched as a makefile that make remakes, and restarts on, before
# anything else: on a fresh machine the first make fetches them, whichever target it is asked
# for (the fetch is locked and checks hashes: concurrent makes share it).
ifeq ($(filter clean,$(MAKECMDGOALS)),)
include $(B)/deps.mk
endif
$(B)/deps.mk:
	@mkdir -p $(B)
	@$(PY) $(FW)/scripts/fetch_deps.py --cache $(WB_DEPS) >/dev/null
	@echo "# the pinned sources are in $(WB_DEPS) (scripts/fetch_deps.py)" > $@
