# tokenmill serving image for the judge (one GPU, offline at run time).
#
# The base ships PyTorch and Triton built for the judge's RTX 5090 (sm_120); tokenmill installs without
# touching that torch. Alternatives: nvcr.io/nvidia/pytorch:25.04-py3 (NGC PyTorch, also in the judge's
# list) or any image with torch >= 2.5 and triton. Build:
#   docker build -t tokenmill --build-arg MODEL_ID=Qwen/Qwen3-0.6B --build-arg MODEL_SOURCE=modelscope .
# Add --build-arg WITH_GRPC=true for the gRPC server (TOKENMILL_GRPC_PORT=8001, deploy/k8s/grpc/).
ARG BASE_IMAGE=vllm/vllm-openai:v0.11.0
FROM ${BASE_IMAGE}

ARG MODEL_ID=Qwen/Qwen3-0.6B
ARG MODEL_REVISION=master
ARG MODEL_SOURCE=modelscope
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG WITH_GRPC=false

WORKDIR /app
COPY pyproject.toml README.md requirements-docker.txt requirements-docker-grpc.txt ./
COPY tokenmill ./tokenmill
RUN pip install --no-cache-dir --index-url "${PIP_INDEX_URL}" -r requirements-docker.txt \
 && if [ "${WITH_GRPC}" = "true" ]; then \
        pip install --no-cache-dir --index-url "${PIP_INDEX_URL}" -r requirements-docker-grpc.txt; fi \
 && pip install --no-cache-dir --index-url "${PIP_INDEX_URL}" --no-deps .

# The model is fetched now, at build time, pinned to a revision, and verified before the image is made.
RUN python -m tokenmill download "${MODEL_ID}" --source "${MODEL_SOURCE}" --revision "${MODEL_REVISION}" --dir /app/model

# Serving settings (override with `docker run -e`, or bake the `tokenmill tune` result here).
ENV TOKENMILL_MODEL=/app/model \
    TOKENMILL_HOST=0.0.0.0 \
    TOKENMILL_PORT=8000 \
    BATCH_MODE=true \
    TOKENMILL_MAX_NUM_SEQS=512 \
    TOKENMILL_DEFAULT_MAX_TOKENS=256 \
    TOKENMILL_GPU_MEMORY_UTILIZATION=0.9 \
    TOKENMILL_SHUTDOWN_TIMEOUT=30 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    MODELSCOPE_OFFLINE=1 \
    PYTHONUNBUFFERED=1

EXPOSE 8000
ENTRYPOINT []
CMD ["python", "-m", "tokenmill", "serve"]
