# The README's commands. Each creates .venv on first use; torch is installed first, from PyTorch's CPU
# wheel index: on Linux, PyPI's torch is the CUDA build of several GB. Where that index cannot be
# reached, pip warns and falls back to PyPI (the CPU wheel on macOS and Windows, CUDA on Linux).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed

DATA ?= ../shared/datasets

.PHONY: demo test runtime-install bench accuracy clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) --extra-index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e '.[train,dev,demo,zh,serve,plot,glove,encoder,tune]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m textcnn.demo

test: $(STAMP)
	$(PY) -m pytest tests

# The PyTorch-free install: a fresh venv with only textcnn[runtime] predicts with an exported model
# (needs PyPI for onnxruntime and numpy; .ci/run calls it).
runtime-install: $(STAMP)
	.ci/runtime-install.sh $(PY)

# Speed against the seed's model and fastText (benchmarks/README.md). Times are only worth
# something on an otherwise idle machine; the data sets are read from ../shared/datasets.
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/speed.py --repeats 3

# Accuracy against fastText and TF-IDF + LogReg on the six data sets (about 40 minutes on 2 cores),
# then MR under Kim's 10-fold protocol; DATA holds the text,label splits (benchmarks/README.md).
accuracy: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/accuracy.py --data-dir $(DATA) --seeds 3
	$(PY) benchmarks/kim_cv.py --data-dir $(DATA)

clean:
	rm -rf $(VENV) runs
