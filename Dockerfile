# TotalSpineSeg BIDS-App. One file, two variants:
#   docker build --build-arg VERSION=$(cat version) -t totalspineseg:$(cat version)-cpu .
#   docker build --build-arg VERSION=$(cat version) --build-arg DEVICE=cuda -t totalspineseg:$(cat version)-cuda .
# Official weights are downloaded and baked in at build time (WEIGHTS=official). Offline: put the release
# zips in docker/weights/ and they are installed from there; WEIGHTS=none bakes nothing (demo model only).
# Offline torch: put the wheel in docker/wheels/ (found before any index), or set TORCH_INDEX_URL.
# Behind a TLS-intercepting proxy: put its CA bundle in docker/ and pass PIP_CA_BUNDLE=/tmp/build/docker/<file>.
# Run: docker run --rm -u $(id -u):$(id -g) -v /data:/data:ro -v /out:/out IMAGE /data /out participant
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build stage: the Python environment and the weights, all under /opt --------------------------------
FROM ${BASE_IMAGE} AS build

ARG DEVICE=cpu
ARG TORCH_CPU=2.13.0
ARG TORCH_CUDA=2.14.1
ARG TORCH_INDEX_URL=
ARG WEIGHTS=official
ARG WEIGHTS_RELEASE=
ARG PIP_CA_BUNDLE=

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOTALSPINESEG_DATA=/opt/totalspineseg/weights

RUN python3 -m venv /opt/venv

COPY requirements/ /tmp/build/requirements/
COPY docker/ /tmp/build/docker/

# torch first, from the index that matches the variant; then the lean nnU-Net stack (no timm/torchvision).
RUN if [ -n "${PIP_CA_BUNDLE}" ]; then export PIP_CERT="${PIP_CA_BUNDLE}"; fi \
    && case "${DEVICE}" in \
      cpu)  spec="torch==${TORCH_CPU}";  index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) spec="torch==${TORCH_CUDA}"; index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      *) echo "DEVICE must be cpu or cuda, not ${DEVICE}" >&2; exit 1 ;; \
    esac \
    && pip install --find-links /tmp/build/docker/wheels --index-url "${index}" \
         --extra-index-url https://pypi.org/simple "${spec}" \
    && echo "${spec}" > /tmp/build/torch.txt \
    && grep -v -e '^torch==' /tmp/build/requirements/requirements-cpu.txt > /tmp/build/runtime.txt \
    && pip install --find-links /tmp/build/docker/wheels -c /tmp/build/torch.txt -r /tmp/build/runtime.txt \
         bids-validator-deno \
    && pip install --no-deps -r /tmp/build/requirements/requirements-nodeps.txt

COPY pyproject.toml version /tmp/build/src/
COPY totalspineseg/ /tmp/build/src/totalspineseg/
RUN pip install --no-deps --no-build-isolation /tmp/build/src

# Zips in docker/weights/ win over a download; WEIGHTS=none installs nothing (the demo model is bundled).
# hadolint ignore=SC2086
RUN mkdir -p "${TOTALSPINESEG_DATA}" \
    && release="${WEIGHTS_RELEASE:+--release ${WEIGHTS_RELEASE}}" \
    && zips=(/tmp/build/docker/weights/*.zip) \
    && if [ -e "${zips[0]}" ]; then from=$(printf -- '--from %s ' "${zips[@]}"); \
       elif [ "${WEIGHTS}" = official ]; then from=""; else from=none; fi \
    && if [ "${from}" != none ]; then \
         totalspineseg-weights install -q ${release} ${from} && totalspineseg-weights verify ${release}; \
       fi \
    && rm -rf "${TOTALSPINESEG_DATA}/nnUNet/exports" \
    && chmod -R a+rX /opt

# ---- runtime stage: /opt from the build stage, nothing else -----------------------------------------------
FROM ${BASE_IMAGE}

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

COPY --from=build /opt /opt
COPY run.py /run.py
COPY version /version
RUN chmod a+rx /run.py && chmod a+r /version \
    && useradd --no-create-home --home-dir /tmp --shell /usr/sbin/nologin --uid 1000 bidsapp

LABEL org.opencontainers.image.title="totalspineseg" \
      org.opencontainers.image.description="BIDS-App: vertebrae, discs, spinal cord and canal segmentation in spine MRI (TotalSpineSeg, nnU-Net)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.url="https://github.com/neuropoly/totalspineseg" \
      io.github.totalspineseg.device="${DEVICE}"

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["/run.py"]
