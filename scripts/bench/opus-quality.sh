#!/usr/bin/env bash
# Speech quality of the Opus the gateway sends browsers, per encoder
# setting (media.opus_complexity 0–10, and CELT-only): PESQ (ITU-T P.862,
# narrowband, the `pesq` package from PyPI) of each decoded stream against
# the same speech after G.711, which is what the gateway encodes.
#
#     [OPUS_BITRATE=24000] scripts/bench/opus-quality.sh [work-dir]
#
# OPUS_BITRATE is the encoder's bit rate (default 16000; the gateway's
# media.opus_bitrate defaults to 24000).
#
# Links the libopus the gateway is built with (libopus 1.5 from
# libopus_sys's vendored sources, decision 0028): LIBOPUS_DIR names its
# build output, by default the newest one under target-bench or target.
# LIBOPUS_DIR=system links Debian's libopus (libopus-dev) instead.
#
# Needs espeak-ng, sox, a C compiler and python3 (the script
# makes a venv for pesq under ~/.cache/switchboard). Prints one line per
# setting: encoder µs per 20 ms frame, bytes per packet, PESQ MOS-LQO.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work/out"
venv="$HOME/.cache/switchboard/venv-pesq"

for tool in espeak-ng sox cc python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (Debian: apt-get install espeak-ng sox gcc)" >&2; exit 1; }
done
repo=$(cd "$here/../.." && pwd)
libopus=${LIBOPUS_DIR:-$(ls -dt "$repo"/target-bench/release/build/libopus_sys-*/out "$repo"/target/*/build/libopus_sys-*/out 2>/dev/null | head -1)}
if [ "$libopus" = system ]; then
  link=(-lopus)
elif [ -f "$libopus/lib/libopus.a" ]; then
  link=(-I"$libopus/include" "$libopus/lib/libopus.a" -lm)
else
  echo "no libopus build found: cargo build --release -p switchboard first, or set LIBOPUS_DIR (system: Debian's libopus-dev)" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import pesq, numpy' 2>/dev/null || "$venv/bin/pip" install -q 'pesq==0.0.4' numpy

cc -O2 "$here/opus-quality.c" -o "$work/opus-quality" "${link[@]}"

# About 40 s of speech from two voices, at 8 kHz, through G.711 µ-law.
cat > "$work/speech.txt" <<'TEXT'
Thank you for calling the support line. My name is Alex, how can I help you today?
I am calling about the invoice we received last week. The total looks higher than the quote.
Let me pull up your account. Could you read me the number at the top of the invoice, please?
It starts with four seven two, then nine nine one, and ends with eight zero five.
I can see it now. There is a shipping charge that should not be there. I will remove it and send a corrected copy.
That is great, thank you. Will it arrive by email or by post?
By email, within the hour. Is there anything else I can do for you?
TEXT
parts=()
for voice in en-us en-gb+f3; do
  espeak-ng -v "$voice" -s 150 -f "$work/speech.txt" -w "$work/speech-$voice.wav"
  parts+=("$work/speech-$voice.wav")
done
sox "${parts[@]}" -r 8000 -c 1 -b 16 "$work/speech-8k.wav" norm -3
sox "$work/speech-8k.wav" -e u-law -t raw - | sox -t raw -r 8000 -c 1 -e u-law - -t raw -e signed -b 16 "$work/speech-g711.raw"

"$work/opus-quality" "$work/speech-g711.raw" "$work/out" "${OPUS_BITRATE:-16000}" | tee "$work/encoder.txt"

"$venv/bin/python" - "$work" <<'PY'
import re, sys, pathlib
import numpy as np
from pesq import pesq

work = pathlib.Path(sys.argv[1])
ref = np.fromfile(work / "speech-g711.raw", dtype="<i2").astype(np.float32)
timing = {}
for line in (work / "encoder.txt").read_text().splitlines():
    m = re.match(r"(\S+) ([\d.]+) us per frame, (\d+) bytes", line)
    if m:
        timing[m.group(1)] = (float(m.group(2)), int(m.group(3)))
print("| setting | encoder µs per 20 ms frame | bytes per packet | PESQ MOS-LQO (narrowband) |")
print("|---|---|---|---|")
for name, (us, size) in timing.items():
    deg = np.fromfile(work / "out" / f"{name}.raw", dtype="<i2").astype(np.float32)
    n = min(len(ref), len(deg))
    score = pesq(8000, ref[:n], deg[:n], "nb")
    print(f"| {name} | {us:.1f} | {size} | {score:.2f} |")
PY
