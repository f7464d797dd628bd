#!/usr/bin/env bash
# Pack what a bare GPU machine with no internet needs to run a sweep on the embedded SmolLM2 (scripts/gpu_table.sh):
# wheels (pycma, gguf, this checkout's transformers), the data of SST-2, RTE and MRPC and the model's GGUF, as one tar
# cut into parts of PART_MB (38) under .gpu/1/, .gpu/2/, ... One call to such a machine may carry only 64 MiB, the
# repository (~12 MiB) included, so the parts travel one per call; scripts/gpu_table.sh joins them on the machine,
# checks the sha256 and unpacks.
#
#   bash scripts/gpu_pack.sh            # from the repository root, after scripts/setup.sh; ../shared/data present
#
# .gpu/ must not be committed: it goes in .git/info/exclude (this script adds it).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/payload/wheels .gpu/payload/data .gpu/payload/model

# Python 3.12 wheels for the machine's image, which has torch, numpy, safetensors, tokenizers, pyyaml and matplotlib.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/payload/wheels cma==4.5.0 gguf==0.19.0 \
  "transformers==$("$PY" -c 'import transformers; print(transformers.__version__)')"
tar cf - -C "$DATA" glue/SST-2 glue/RTE mrpc | tar xf - -C .gpu/payload/data
gguf=$("$PY" -c 'from softprompt.models.loading import EMBEDDED, _gguf_path
print(_gguf_path(EMBEDDED["smollm2-135m-instruct"], None))')
cp "$gguf" .gpu/payload/model/

tar czf .gpu/payload.tgz -C .gpu/payload .
sha256sum .gpu/payload.tgz | cut -d' ' -f1 > .gpu/payload.sha256
split -b "${PART_MB:-38}M" -d -a 1 .gpu/payload.tgz .gpu/part.
for f in .gpu/part.*; do
  i=$(( ${f##*.} + 1 ))
  mkdir -p ".gpu/$i" && mv "$f" ".gpu/$i/part"
done
cp .gpu/payload.sha256 .gpu/1/
rm -rf .gpu/payload .gpu/payload.tgz .gpu/payload.sha256
du -sh .gpu/[0-9]*
