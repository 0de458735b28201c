#!/bin/sh
# One take from the board's microphone into a WAV (32-bit: the LLM Kit's driver garbles 16-bit capture).
#   sh record.sh ROOT DEVICE FORMAT SECONDS NAME   -> prints the path of the take
root=$1 device=$2 format=$3 seconds=$4 name=$5
command -v arecord >/dev/null 2>&1 || { echo "error: arecord not found on the board: apt-get install alsa-utils" >&2; exit 3; }
mkdir -p "$root/.incoming" || { echo "error: cannot create $root/.incoming" >&2; exit 3; }
out="$root/.incoming/$name"
if ! err=$(arecord -q -D "$device" -f "$format" -r 16000 -c 1 -t wav -d "$seconds" "$out" 2>&1); then
  rm -f "$out"
  echo "error: arecord -D $device failed: $err; list the capture devices with \`arecord -l\` and pass --device" >&2
  exit 3
fi
echo "$out"
