#!/bin/sh
# A Weft task handler in shell: the payload arrives as JSON on stdin, what
# this prints on stdout is the result (a number here, which is valid JSON),
# and a non-zero exit fails the attempt (Weft retries it).
#
#   weft worker --lane shell --exec examples/shell-worker/word-count.sh
#   weft submit count --lane shell --payload '"the quick brown fox"'
set -eu
words=$(wc -w | tr -d ' ')
if [ "$words" -eq 0 ]; then
  echo "nothing to count in execution $WEFT_EXECUTION_ID" >&2
  exit 2
fi
echo "$words"
