# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_STEPS ?= 2000

# Debian packages napari needs on a virtual display: Xvfb, Mesa's OpenGL, and
# the xcb libraries of Qt's X11 platform plugin.
APT_PACKAGES := xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglx-mesa0 libfontconfig1 libdbus-1-3 \
	libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0

.PHONY: demo test install system-deps clean benchmark screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Installs only what is missing; needs root or sudo on Debian/Ubuntu.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

ifeq ($(HEADLESS),1)
demo: install
	mkdir -p demo-output
	$(BIN)/probseg train cellulus src/probseg/evaluation/sample_data/dsb2018_nuclei_left.tif \
		--object-size 24 --steps $(DEMO_STEPS) --out demo-output/model --overwrite
	$(BIN)/probseg segment demo-output/model src/probseg/evaluation/sample_data/dsb2018_nuclei_left.tif \
		--out demo-output/labels.tif --overwrite --samples 8 --samples-out demo-output/samples.tif \
		--embeddings-out demo-output/embeddings.tif --uncertainty-out demo-output/uncertainty.tif
	$(BIN)/probseg evaluate demo-output/labels.tif src/probseg/evaluation/sample_data/dsb2018_nuclei_left_labels.tif | tee demo-output/scores.json
else
demo: install
	$(BIN)/python -m napari_probseg.demo
endif

test: install system-deps
	$(BIN)/python -m pytest -q

benchmark: install
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/partition_speed.py
	$(BIN)/python benchmarks/cellulus_nuclei.py
	$(BIN)/python benchmarks/consensus.py
	$(BIN)/python benchmarks/proofreading_simulation.py
	$(BIN)/python benchmarks/large_image.py
	$(BIN)/python benchmarks/auto_resolution.py

screenshots: install system-deps
	xvfb-run -a -s "-screen 0 1920x1200x24" $(BIN)/python docs/screenshots.py
	xvfb-run -a -s "-screen 0 1920x1200x24" $(BIN)/python docs/consensus_screenshots.py
	xvfb-run -a -s "-screen 0 1920x1200x24" $(BIN)/python docs/proofread_screenshots.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
