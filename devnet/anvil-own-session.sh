#!/bin/sh
# Runs anvil in a session of its own, so that a Ctrl-C at the terminal reaches the demo (which
# then lets the messages in flight land) and not the chains. Used by `dvn-devnet demo` only:
# tests keep anvil in their process group, so that a killed test takes its chains with it.
exec setsid "$DVN_ANVIL_BIN" "$@"
