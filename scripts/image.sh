#!/usr/bin/env bash
# Builds the vodfleet container image (Containerfile) with Debian's podman:
# the release binaries, then the image. Works offline: when the base image
# cannot be pulled it is made with debootstrap and imported under the name the
# Containerfile uses (docker.io/library/debian:bookworm-slim).
#
#   scripts/image.sh [--profile release|debug] [--tag NAME] [--no-cargo]
#                    [--offline] [--refresh-base]
#
#   --profile P     the cargo profile whose binaries go in (default release)
#   --tag NAME      the image name (default $VODFLEET_IMAGE or vodfleet:latest,
#                   stored as localhost/vodfleet:latest)
#   --no-cargo      do not run cargo; take the binaries already in target/P/
#   --offline       do not try the registry for the base image
#   --refresh-base  make the base image again (pull, else debootstrap)
#
# Prints the image name on stdout; progress goes to stderr. The image lives in
# the project's own podman store (scripts/image/lib.sh: vfs driver, runc,
# cgroupfs, lowered ulimits; the machine's /etc/containers is not touched):
# run it with scripts/image/podman, e.g.
#   scripts/image/podman run --rm --network host vodfleet:latest vodctl --help
#
# Cached between runs under ${VODFLEET_IMAGE_STATE:-~/.cache/vodfleet}: the
# image store (base image and the layer with the Debian packages) and the
# debootstrap tarball (base/), so a second build only copies the binaries in.
#
# Env: VODFLEET_DEBIAN_MIRROR, VODFLEET_DEBIAN_SECURITY_MIRROR (default: what
# this machine's apt uses, from /etc/apt/sources.list*), VODFLEET_IMAGE_STATE.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/image/lib.sh
source "$VF_ROOT/scripts/image/lib.sh"
VF_NAME=image
cd "$VF_ROOT"

profile=release
tag=${VODFLEET_IMAGE:-vodfleet:latest}
cargo_build=1
offline=0
refresh_base=0
while (($#)); do
    case $1 in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --no-cargo) cargo_build=0; shift ;;
    --offline) offline=1; shift ;;
    --refresh-base) refresh_base=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) vf_die "unknown argument $1 (see --help)" ;;
    esac
done
case $profile in
release | debug) ;;
*) vf_die "--profile must be release or debug, not $profile" ;;
esac
started=$SECONDS

# The base image: the default of `ARG BASE` in the Containerfile.
base=$(sed -n 's/^ARG BASE=\(.*\)$/\1/p' Containerfile | head -n1)
[[ -n $base ]] || vf_die "no 'ARG BASE=' line in Containerfile"

# --- packages -----------------------------------------------------------------
VF_PACKAGES=("${VF_IMAGE_PACKAGES[@]}")
if ((cargo_build)); then
    VF_PACKAGES+=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
        libswresample-dev libavfilter-dev libavdevice-dev clang libclang-dev pkg-config)
fi
vf_ensure_packages

vf_image_podman_env
mkdir -p "$VF_IMAGE_STATE/base"
# One build at a time per store.
exec 9>"$VF_IMAGE_STATE/image.lock"
if ! flock -n 9; then
    vf_log "another image build holds $VF_IMAGE_STATE/image.lock; waiting (up to 20 min)"
    flock -w 1200 9 || vf_die "the image build lock stayed taken for 20 min"
fi

# --- binaries -----------------------------------------------------------------
bins=(vodfleet-coordinator vodfleet-worker vodctl)
if ((cargo_build)); then
    vf_cargo_path
    vf_have cargo || vf_die "cargo not found (scripts/setup.sh installs Rust)"
    locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    flags=(--workspace --bins "${locked[@]}")
    [[ $profile == release ]] && flags+=(--release)
    vf_log "cargo build ${flags[*]}"
    t=$SECONDS
    cargo build "${flags[@]}"
    vf_log "binaries built in $((SECONDS - t)) s"
fi
out=${CARGO_TARGET_DIR:-target}/$profile
# The build context: a directory holding only bin/ with copies of the
# binaries without their debug sections (symbols stay). A fraction of the size
# (vfs copies every layer whole), and buildah need not walk the repository's
# target/ past .containerignore (that alone took ~40 s here).
context=${CARGO_TARGET_DIR:-target}/image/$profile
mkdir -p "$context/bin"
for b in "${bins[@]}"; do
    [[ -x $out/$b ]] || vf_die "$out/$b missing: build it (without --no-cargo this script does)"
    if [[ ! $context/bin/$b -nt $out/$b ]]; then
        objcopy --strip-debug "$out/$b" "$context/bin/$b.part"
        mv "$context/bin/$b.part" "$context/bin/$b"
    fi
done

# --- base image -----------------------------------------------------------------
# vf_image_mirror KIND: the Debian mirror this machine's apt uses for KIND
# ("debian" or "debian-security"), from /etc/apt/sources.list{,.d/*}.
vf_image_mirror() {
    local kind=$1 uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n -e 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]\+\).*/\2/p' \
            -e 's/^[[:space:]]*URIs:[[:space:]]*//p' |
        tr ' ' '\n' | grep -E "^https?://[^ ]*/$kind/?\$" | head -n1 || true)
    echo "${uri%/}"
}

# vf_image_debootstrap TARBALL: a Debian bookworm minbase tree, trimmed like the
# official -slim images, as a tarball.
vf_image_debootstrap() {
    local out=$1
    local mirror=${VODFLEET_DEBIAN_MIRROR:-$(vf_image_mirror debian)}
    local security=${VODFLEET_DEBIAN_SECURITY_MIRROR:-$(vf_image_mirror debian-security)}
    mirror=${mirror:-http://deb.debian.org/debian}
    security=${security:-http://deb.debian.org/debian-security}
    local work
    work=$(mktemp -d "$VF_IMAGE_STATE/base/debootstrap.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this tree
    trap "vf_as_root rm -rf '$work'" EXIT
    local root=$work/root
    vf_log "base: debootstrap --variant=minbase bookworm from $mirror (a few minutes, once)"
    local t=$SECONDS
    if ! vf_as_root debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/log" 2>&1; then
        tail -n 30 "$work/log" >&2
        vf_die "debootstrap failed (log above)"
    fi
    # Trimmed like debuerreotype's --slimify (what the official -slim images are).
    vf_as_root tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
# as in the official debian:*-slim images
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    vf_as_root tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' | vf_as_root tee "$root/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
    echo 'APT::AutoRemove::SuggestsImportant "false";' |
        vf_as_root tee "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
    # The same sources as the official image, on this machine's mirror.
    vf_as_root rm -f "$root/etc/apt/sources.list"
    vf_as_root tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Point release and security updates, as the official image has them.
    if vf_as_root chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get -q update && apt-get -q -y upgrade' >>"$work/log" 2>&1; then
        vf_log "base: updated from bookworm-updates and bookworm-security"
    else
        tail -n 10 "$work/log" >&2
        vf_log "base: warning: apt-get upgrade in the new tree failed; the base has bookworm's release versions"
    fi
    vf_as_root sh -c "cd '$root' && rm -rf var/lib/apt/lists/* var/cache/apt/* var/log/*.log \
        var/log/apt/* var/cache/debconf/*-old usr/share/man/* usr/share/info/* usr/share/locale/* \
        usr/share/groff/* usr/share/lintian/overrides/* tmp/* run/* dev/* proc/* sys/* && \
        find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete && \
        find usr/share/doc -mindepth 1 -type d -empty -delete && \
        : >etc/resolv.conf && echo localhost >etc/hostname"
    vf_as_root tar -C "$root" --numeric-owner --xattrs -cf "$out.part" .
    vf_as_root chown "$(id -u):$(id -g)" "$out.part"
    mv "$out.part" "$out"
    vf_as_root rm -rf "$work"
    trap - EXIT
    vf_log "base: $(du -h "$out" | cut -f1) tarball made in $((SECONDS - t)) s: $out"
}

vf_image_base() {
    if ((!refresh_base)) && podman image exists "$base"; then
        vf_log "base: $base in the store ($VF_IMAGE_STATE/storage)"
        return
    fi
    if ((!offline)); then
        vf_log "base: pulling $base"
        if timeout 300 podman pull --quiet "$base" >/dev/null 2>"$VF_IMAGE_STATE/base/pull.log"; then
            vf_log "base: pulled $base"
            return
        fi
        vf_log "base: cannot pull $base ($(tail -n1 "$VF_IMAGE_STATE/base/pull.log")); making it with debootstrap"
    fi
    local tarball=$VF_IMAGE_STATE/base/debian-bookworm-minbase-slim.tar
    if ((refresh_base)) || [[ ! -s $tarball ]]; then
        vf_image_debootstrap "$tarball"
    else
        vf_log "base: reusing $tarball"
    fi
    podman import --quiet \
        --change 'CMD ["bash"]' \
        --change 'LABEL org.opencontainers.image.description="Debian bookworm, debootstrap --variant=minbase, trimmed like -slim (scripts/image.sh)"' \
        "$tarball" "$base" >/dev/null
    vf_log "base: imported $tarball as $base"
}
t=$SECONDS
vf_image_base
base_secs=$((SECONDS - t))

# --- the image ------------------------------------------------------------------
# Inputs unchanged since the image was last built (Containerfile, binaries,
# base image): nothing to do. vfs makes even a fully cached `podman build`
# take ~45 s (each step copies or deletes a whole tree).
inputs=$( (cat Containerfile "${bins[@]/#/$context/bin/}"
    podman image inspect --format '{{.Id}}' "$base") | sha256sum | cut -c1-32)
have=$(podman image inspect --format '{{index .Labels "vodfleet.build-inputs"}}' "$tag" 2>/dev/null || true)
if [[ $have == "$inputs" ]]; then
    vf_log "image: $tag is up to date (same Containerfile, binaries and base)"
    build_secs=0
else
    # --network host: the RUN step's apt-get reaches the mirror the way this
    # machine does (no CNI bridge or iptables needed). --pull=never: the base
    # is in the store by now; never ask a registry.
    vf_log "podman build -t $tag (profile $profile)"
    t=$SECONDS
    log=$VF_IMAGE_STATE/build.log
    if ! podman build --network host --pull=never --layers \
        --label "vodfleet.build-inputs=$inputs" \
        --build-arg BINDIR=bin -f Containerfile -t "$tag" "$context" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        vf_die "podman build failed (full log: $log)"
    fi
    build_secs=$((SECONDS - t))
    # The image this replaced is garbage now (vfs keeps whole trees).
    podman image prune -f >/dev/null 2>&1 || true
fi

# It does not run as root, and every library resolves inside it.
check=$(podman run --rm --network none "$tag" sh -c 'id -u; ldd /usr/local/bin/* | grep "not found" || true')
uid=$(head -n1 <<<"$check")
unresolved=$(tail -n +2 <<<"$check")
[[ -z $unresolved ]] || vf_die "libraries missing in the image:
$unresolved"
[[ $uid =~ ^[0-9]+$ && $uid != 0 ]] || vf_die "the image runs as uid '$uid', not as a non-root user"
size=$(podman image inspect --format '{{.Size}}' "$tag")
vf_log "$tag: $((size / 1000000)) MB, runs as uid $uid; base ${base_secs} s, podman build ${build_secs} s, total $((SECONDS - started)) s"
podman image inspect --format '{{index .RepoTags 0}}' "$tag"
