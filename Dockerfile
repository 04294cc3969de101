# The gan-search image: CUDA-capable torch from PyPI; the same entry point as on a laptop.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY search ./search
COPY studies ./studies
COPY configs ./configs
RUN pip install torch==2.14.1 torchvision==0.29.1 && pip install .
RUN useradd --create-home gan && mkdir -p /data /artifacts && chown gan /data /artifacts
USER gan
ENV GAN_SEARCH_CACHE=/artifacts/cache
ENTRYPOINT ["gan-search"]
