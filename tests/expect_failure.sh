#!/bin/sh
# Runs a command that must fail; prints its output and exit code for ctest's regex to check.
"$@" 2>&1
echo "EXIT=$?"
