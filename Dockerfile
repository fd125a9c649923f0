# TotalSpineSeg BIDS-App. One file, two variants; docker/build.sh drives it (see docker/README.md):
#   docker/build.sh                      CPU image, official weights downloaded and baked in
#   docker/build.sh --device cuda        CUDA image (run with --gpus all)
#   docker/build.sh --help               offline inputs: base image, torch wheel, wheels, weights zips/folder
# Plain docker build works too: docker build --build-arg VERSION=$(cat version) -t totalspineseg:$(cat version)-cpu .
# Packages: requirements/lock-cpu.txt, every version exact, installed with --no-deps (nothing is resolved here).
# Run: docker run --rm -u $(id -u):$(id -g) -v /data:/data:ro -v /out:/out IMAGE /data /out participant
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build stage: the Python environment and the weights, all under /opt --------------------------------
FROM ${BASE_IMAGE} AS build
# docker/build.sh removes this project's untagged images (the legacy builder's leftovers) by this label.
LABEL io.github.totalspineseg.stage="build"

ARG DEVICE=cpu
ARG TORCH_CUDA=2.14.1
ARG TORCH_INDEX_URL=
ARG WEIGHTS=official
ARG WEIGHTS_RELEASE=
ARG PIP_CA_BUNDLE=
ARG PIP_OFFLINE=

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOTALSPINESEG_DATA=/opt/totalspineseg/weights

RUN python3 -m venv /opt/venv

COPY requirements/ /tmp/build/requirements/
COPY docker/ /tmp/build/docker/

# Every package of the lock at its exact version, --no-deps (nothing is resolved), then pip check (the one
# accepted gap: dynamic-network-architectures' timm, see requirements-nodeps.txt). torch: CPU, the lock's
# build (a local wheel in docker/wheels/, else TORCH_INDEX_URL or the PyTorch CPU index); CUDA, TORCH_CUDA
# from PyPI with its CUDA libraries, every shared dependency held at the lock's version.
# PIP_OFFLINE=1: no index at all, every wheel from docker/wheels/ (docker/build.sh --wheels).
RUN if [ -n "${PIP_CA_BUNDLE}" ]; then export PIP_CERT="${PIP_CA_BUNDLE}"; fi \
    && if [ -n "${PIP_OFFLINE}" ]; then export PIP_NO_INDEX=1; fi \
    && export PIP_FIND_LINKS=/tmp/build/docker/wheels \
    && lock=/tmp/build/requirements/lock-cpu.txt \
    && grep -v -E '^(#|torch==|$)' "${lock}" > /tmp/build/runtime.txt \
    && case "${DEVICE}" in \
      cpu)  pip install --no-deps --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" \
                --extra-index-url https://pypi.org/simple "$(grep -E '^torch==' "${lock}")" ;; \
      cuda) pip install -c /tmp/build/runtime.txt --index-url "${TORCH_INDEX_URL:-https://pypi.org/simple}" \
                "torch==${TORCH_CUDA}" ;; \
      *) echo "DEVICE must be cpu or cuda, not ${DEVICE}" >&2; exit 1 ;; \
    esac \
    && pip install --no-deps -r /tmp/build/runtime.txt \
    && { pip check || true; } \
       | { grep -v -e 'requires timm, which is not installed' -e '^No broken requirements' || true; } \
       | { ! grep .; }

COPY pyproject.toml version /tmp/build/src/
COPY totalspineseg/ /tmp/build/src/totalspineseg/
# The package; the weights (docker/bake-weights.sh: installed from docker/weights/ or downloaded, then their
# sizes and sha256 verified); then lean: no pip (setuptools stays: torch requires it), no test suites, no C++
# headers or test binaries of torch (inference never compiles: nnUNet_compile=f; torch_shm_manager stays),
# shared libraries stripped of their symbol tables where they still load (~190 MB; docker/strip-libs.sh, with
# binutils from the base or from apt when the build has a network, in the build stage only).
# One RUN: on the vfs storage driver every layer is a full copy of the file system.
RUN pip install --no-deps --no-build-isolation /tmp/build/src \
    && mkdir -p "${TOTALSPINESEG_DATA}" \
    && bash /tmp/build/docker/bake-weights.sh "${WEIGHTS}" "${WEIGHTS_RELEASE}" /tmp/build/docker/weights \
    && rm -rf "${TOTALSPINESEG_DATA}/nnUNet/exports" \
    && site=$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && python -m pip uninstall -q -y pip \
    && find "${site}" -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf "${site}/torch/include" "${site}/torch/test" "${site}/torch/share/cmake" \
    && find "${site}/torch/bin" -type f ! -name torch_shm_manager -delete \
    && if ! command -v strip > /dev/null; then \
         { apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils \
           && rm -rf /var/lib/apt/lists/*; } || true; \
       fi \
    && bash /tmp/build/docker/strip-libs.sh /opt/venv /opt/venv/bin/python \
    && chmod -R a+rX /opt

# ---- runtime stage: /opt from the build stage, nothing else -----------------------------------------------
# Metadata first and /opt last: on the vfs storage driver every later step would copy /opt again.
FROM ${BASE_IMAGE}
LABEL io.github.totalspineseg.stage="runtime"

ARG DEVICE=cpu
ARG VERSION=unknown

# Everything the app may write at run time goes to the output folder or /tmp; HOME is not needed.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONNOUSERSITE=1 \
    PYTHONPATH="" \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/torch \
    nnUNet_raw=/tmp/nnUNet_raw \
    nnUNet_preprocessed=/tmp/nnUNet_preprocessed \
    nnUNet_results=/tmp/nnUNet_results \
    nnUNet_compile=f \
    TOTALSPINESEG_DATA=/opt/totalspineseg/weights \
    TOTALSPINESEG_CONTAINER_TYPE=docker \
    TOTALSPINESEG_CONTAINER_TAG=totalspineseg:${VERSION}-${DEVICE}

LABEL org.opencontainers.image.title="totalspineseg" \
      org.opencontainers.image.description="BIDS-App: vertebrae, discs, spinal cord and canal segmentation in spine MRI (TotalSpineSeg, nnU-Net)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.url="https://github.com/neuropoly/totalspineseg" \
      io.github.totalspineseg.device="${DEVICE}"

WORKDIR /tmp
ENTRYPOINT ["/run.py"]
COPY run.py version /
RUN chmod a+rx /run.py && chmod a+r /version \
    && useradd --no-create-home --home-dir /tmp --shell /usr/sbin/nologin --uid 1000 bidsapp
COPY --from=build /opt /opt
USER 1000:1000
