#!/bin/sh
# Re-render the diagrams from their Graphviz sources: docs/diagrams/*.dot -> *.svg.
# Needs Graphviz (`apt-get install graphviz`).  Run from anywhere: sh docs/diagrams/render.sh
set -eu
cd "$(dirname "$0")"
for src in *.dot; do
  dot -Tsvg "$src" -o "${src%.dot}.svg"
  echo "rendered ${src%.dot}.svg"
done
