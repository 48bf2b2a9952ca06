#!/usr/bin/env bash
# Makes the local base images that hkube's build service builds algorithm images FROM
# (templates/<env>/Dockerfile), without any registry: Debian 12 from debootstrap, the rest from
# Debian's own packages on top of it.
#
#   hkube/debian:bookworm   debootstrap --variant=minbase bookworm, imported with `docker import`
#   hkube/python:bookworm   + python3 (3.11), python3-venv, ca-certificates; a venv at
#                           /opt/hkube/venv whose bin/ is first on PATH (plain `pip install` works)
#   hkube/nodejs:bookworm   + nodejs, npm, ca-certificates
#   hkube/java:bookworm     + openjdk-17-jdk-headless, maven, ca-certificates
#
# Images that exist are left alone (a run with all of them present takes a fraction of a second).
# The debootstrap root filesystem is kept as a tarball in $HKUBE_CACHE_DIR, so making
# hkube/debian:bookworm again after `docker rmi` is a `docker import` of it, not a debootstrap.
#
# Usage: scripts/base-images.sh [--force] [--only ENV[,ENV...]] [--mirror URL]
#   --force        make the chosen images again even when present (without --only: also a fresh
#                  debootstrap instead of the cached tarball)
#   --only ENVS    python, nodejs, java or debian (repeatable or comma-separated); hkube/debian is
#                  always made first when it is missing
#   --mirror URL   the Debian mirror for debootstrap and apt (default http://deb.debian.org/debian;
#                  the security archive is added only for deb.debian.org)
# Environment:
#   HKUBE_CACHE_DIR   where the rootfs tarball is kept (default /var/cache/hkube)
#   HKUBE_CA_BUNDLE   a CA bundle apt trusts when the mirror is https (default
#                     /etc/ssl/certs/ca-certificates.crt when it exists); not needed for http
#   HKUBE_IMAGE_PREFIX  the images' repository prefix (default hkube: hkube/python:bookworm);
#                     the templates build FROM hkube/... unless given another BASE_IMAGE
# Needs: root (debootstrap), a running Docker engine, debootstrap (only when the rootfs must be
# made). Exit status: 0 all images present, 1 an image could not be made, 2 usage or setup error.
set -euo pipefail

readonly SUITE=bookworm
readonly DEFAULT_MIRROR=http://deb.debian.org/debian
readonly ALL_ENVS=(python nodejs java)

log() { printf 'base-images: %s\n' "$*"; }
die() { printf 'base-images: error: %s\n' "$*" >&2; exit "${2:-2}"; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

force=0
mirror="$DEFAULT_MIRROR"
only=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) force=1 ;;
        --only)
            [[ $# -ge 2 ]] || die "--only needs a value (python, nodejs, java or debian)"
            IFS=, read -r -a parts <<<"$2"
            only+=("${parts[@]}")
            shift
            ;;
        --only=*) IFS=, read -r -a parts <<<"${1#--only=}"; only+=("${parts[@]}") ;;
        --mirror)
            [[ $# -ge 2 ]] || die "--mirror needs a URL"
            mirror="$2"
            shift
            ;;
        --mirror=*) mirror="${1#--mirror=}" ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
mirror="${mirror%/}"
[[ "$mirror" =~ ^https?:// ]] || die "--mirror must be an http:// or https:// URL, not '$mirror'"

want_debian=0
envs=()
if [[ ${#only[@]} -eq 0 ]]; then
    want_debian=1
    envs=("${ALL_ENVS[@]}")
else
    for e in "${only[@]}"; do
        case "$e" in
            python | nodejs | java) [[ " ${envs[*]-} " == *" $e "* ]] || envs+=("$e") ;;
            debian) want_debian=1 ;;
            "") ;;
            *) die "--only: unknown env '$e' (python, nodejs, java or debian)" ;;
        esac
    done
fi

prefix="${HKUBE_IMAGE_PREFIX:-hkube}"
prefix="${prefix%/}"
image_for() { printf '%s/%s:%s' "$prefix" "$1" "$SUITE"; }
readonly DEBIAN_IMAGE="$(image_for debian)"

# --- preconditions -------------------------------------------------------------------------------
[[ "$(id -u)" -eq 0 ]] || die "must run as root (debootstrap and the Docker socket need it); try: sudo $0"
command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (Debian: apt-get install docker.io)"
# A dockerd started just before may take a few seconds to answer.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && break
    if [[ $attempt -eq 10 ]]; then
        docker version >/dev/null || true
        die "cannot reach the Docker engine (is dockerd running? try: systemctl start docker, or dockerd &)"
    fi
    sleep 1
done

have_image() { docker image inspect "$@" >/dev/null 2>&1; }

# The fast path: everything asked for is there already.
wanted=("$DEBIAN_IMAGE")
for e in ${envs[@]+"${envs[@]}"}; do wanted+=("$(image_for "$e")"); done
if [[ $force -eq 0 ]] && have_image "${wanted[@]}"; then
    log "present: ${wanted[*]} (nothing to do; --force makes them again)"
    exit 0
fi

arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
cache_dir="${HKUBE_CACHE_DIR:-/var/cache/hkube}"
rootfs_tar="$cache_dir/debian-$SUITE-minbase-$arch.tar"
if [[ "$mirror" != "$DEFAULT_MIRROR" ]]; then
    # Another mirror is another root filesystem (its sources.list names the mirror).
    rootfs_tar="$cache_dir/debian-$SUITE-minbase-$arch-$(printf '%s' "$mirror" | sha256sum | cut -c1-12).tar"
fi
ca_bundle="${HKUBE_CA_BUNDLE-}"
if [[ -z "$ca_bundle" && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    ca_bundle=/etc/ssl/certs/ca-certificates.crt
fi
if [[ -n "$ca_bundle" && ! -r "$ca_bundle" ]]; then
    die "HKUBE_CA_BUNDLE=$ca_bundle is not a readable file"
fi

# Temporary folders, removed on exit whatever happens. A debootstrap that failed half-way may
# leave /proc or /sys mounted inside its target: unmount before removing, and never cross into
# another file system.
tmp_dirs=()
cleanup() {
    local d m
    for d in ${tmp_dirs[@]+"${tmp_dirs[@]}"}; do
        [[ -d "$d" ]] || continue
        awk -v p="$d/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf --one-file-system "$d" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- hkube/debian:bookworm -----------------------------------------------------------------------

# Trims and configures a fresh debootstrap tree the way container base images usually are.
configure_rootfs() {
    local root="$1"
    # Sources: the suite, its updates and (from the default mirror) the security archive.
    {
        echo "deb $mirror $SUITE main"
        echo "deb $mirror $SUITE-updates main"
        if [[ "$mirror" =~ ^(https?)://deb\.debian\.org/debian$ ]]; then
            echo "deb ${BASH_REMATCH[1]}://deb.debian.org/debian-security $SUITE-security main"
        fi
    } >"$root/etc/apt/sources.list"
    # apt: no recommends, no translations, no cached .debs or package caches left in layers.
    cat >"$root/etc/apt/apt.conf.d/90hkube" <<'EOF'
// hkube base image: keep layers small.
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
    # dpkg: no manuals, info pages or translations (copyright files stay).
    cat >"$root/etc/dpkg/dpkg.cfg.d/90hkube-nodoc" <<'EOF'
# hkube base image: no documentation (copyright files are kept).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* 2>/dev/null || true
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    # Some postinst scripts (openjdk's update-alternatives) need this folder to exist.
    mkdir -p "$root/usr/share/man/man1"
    # No services start inside a container build.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    # Caches, logs and host-specific files.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/*.log \
        "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/* 2>/dev/null || true
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    [[ -e "$root/etc/machine-id" ]] && : >"$root/etc/machine-id"
    return 0
}

make_rootfs_tar() {
    command -v debootstrap >/dev/null 2>&1 ||
        die "debootstrap is not installed (Debian: apt-get install debootstrap); it makes $DEBIAN_IMAGE"
    mkdir -p "$cache_dir"
    local root
    root="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
    tmp_dirs+=("$root")
    chmod 0755 "$root"
    log "debootstrap --variant=minbase $SUITE $mirror (about 30 s) into $root"
    local out="$cache_dir/debootstrap.log" start=$SECONDS
    if ! debootstrap --variant=minbase --arch="$arch" "$SUITE" "$root" "$mirror" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        [[ -f "$root/debootstrap/debootstrap.log" ]] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (full output: $out)" 1
    fi
    configure_rootfs "$root"
    log "packing the root filesystem into $rootfs_tar"
    tar --numeric-owner --xattrs --one-file-system -C "$root" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
        -cf "$rootfs_tar.tmp" .
    mv -f "$rootfs_tar.tmp" "$rootfs_tar"
    log "root filesystem ready in $((SECONDS - start)) s ($(du -m "$rootfs_tar" | cut -f1) MB)"
    cleanup
    tmp_dirs=()
}

make_debian() {
    if [[ $force -eq 1 && $rebuild_rootfs -eq 1 ]] || [[ ! -s "$rootfs_tar" ]]; then
        make_rootfs_tar
    else
        log "reusing the cached root filesystem $rootfs_tar"
    fi
    log "docker import $rootfs_tar $DEBIAN_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL io.hkube.base=debian' \
        --change 'CMD ["bash"]' \
        --message "hkube: debootstrap --variant=minbase $SUITE $mirror" \
        "$rootfs_tar" "$DEBIAN_IMAGE" >/dev/null
}

# --- hkube/<env>:bookworm ------------------------------------------------------------------------

packages_for() {
    case "$1" in
        python) echo "python3 python3-venv ca-certificates" ;;
        nodejs) echo "nodejs npm ca-certificates" ;;
        java) echo "openjdk-17-jdk-headless maven ca-certificates" ;;
    esac
}

# The Dockerfile lines that follow the package installation.
setup_for() {
    case "$1" in
        python)
            cat <<'EOF'
RUN python3 -m venv /opt/hkube/venv \
 && /opt/hkube/venv/bin/python -m pip --version
ENV VIRTUAL_ENV=/opt/hkube/venv \
    PATH=/opt/hkube/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1
CMD ["python3"]
EOF
            ;;
        nodejs)
            cat <<'EOF'
RUN node --version && npm --version && rm -rf /root/.npm
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
CMD ["node"]
EOF
            ;;
        java)
            cat <<EOF
RUN javac -version && mvn -v | head -n 1
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-$arch
CMD ["jshell"]
EOF
            ;;
    esac
}

make_env_image() {
    local env="$1" image ctx apt_opts=""
    image="$(image_for "$env")"
    ctx="$(mktemp -d /tmp/hkube-base-"$env".XXXXXX)"
    tmp_dirs+=("$ctx")
    : >"$ctx/ca.crt"
    if [[ "$mirror" == https://* ]]; then
        # apt in the base image has no CA certificates yet: give it the bundle for this step.
        [[ -n "$ca_bundle" ]] || die "the mirror is https but there is no CA bundle to trust (set HKUBE_CA_BUNDLE)"
        cp "$ca_bundle" "$ctx/ca.crt"
        apt_opts="-o Acquire::https::CAInfo=/tmp/hkube-ca.crt"
    fi
    {
        echo "FROM $DEBIAN_IMAGE"
        echo "LABEL io.hkube.base=$env"
        echo "COPY ca.crt /tmp/hkube-ca.crt"
        echo "RUN set -eux; export DEBIAN_FRONTEND=noninteractive; \\"
        echo "    apt-get $apt_opts update; \\"
        echo "    apt-get $apt_opts install -y --no-install-recommends $(packages_for "$env"); \\"
        echo "    apt-get clean; rm -rf /var/lib/apt/lists/* /tmp/hkube-ca.crt /var/log/apt/* /var/log/dpkg.log"
        setup_for "$env"
    } >"$ctx/Dockerfile"
    log "building $image (apt: $(packages_for "$env"))"
    mkdir -p "$cache_dir"
    local out="$cache_dir/build-$env.log" start=$SECONDS no_cache=()
    # --force means fresh packages: no layer from an earlier build of the same Dockerfile.
    [[ $force -eq 0 ]] || no_cache=(--no-cache)
    if ! DOCKER_BUILDKIT=0 docker build --force-rm ${no_cache[@]+"${no_cache[@]}"} -t "$image" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        die "building $image failed (full log: $out)" 1
    fi
    log "built $image in $((SECONDS - start)) s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1000000}'))"
}

# --- main ----------------------------------------------------------------------------------------
# One run at a time per cache folder (two debootstraps or imports at once would only race).
mkdir -p "$cache_dir"
exec 9>"$cache_dir/.lock"
if ! flock -n 9; then
    log "another base-images.sh is running (lock $cache_dir/.lock): waiting for it"
    flock 9
fi
# --force with no --only (or with --only debian) makes the root filesystem afresh too.
rebuild_rootfs=$want_debian
if [[ $force -eq 1 && $want_debian -eq 1 ]] || ! have_image "$DEBIAN_IMAGE"; then
    make_debian
    debian_new=1
else
    log "present: $DEBIAN_IMAGE"
    debian_new=0
fi
for e in ${envs[@]+"${envs[@]}"}; do
    image="$(image_for "$e")"
    # A new hkube/debian means the images on top of it are stale: make them again.
    if [[ $force -eq 1 || $debian_new -eq 1 ]] || ! have_image "$image"; then
        make_env_image "$e"
    else
        log "present: $image"
    fi
done
log "done: ${wanted[*]}"
