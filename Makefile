# Makefile: builds files from files, seeds [+ voices] -> dataset -> features [-> embeddings] -> model -> ONNX -> Pulsar2 -> axmodel.
# Imperative and remote work (Docker daemon, images, the board) lives in tasks.py (invoke).
# Parameters are defined once, in schemas/params/<stage>.schema.json (with their defaults); a preset
# (pipeline/params/presets/$(PARAMS).toml) holds only overrides. Every value an artifact depends on
# (each stage's resolved parameters, the seed files, the compiler choice, the holdout) becomes a stamp
# under $(BUILD) that is rewritten only when it changes, so exactly what depends on a change rebuilds.
SHELL         := bash
.SHELLFLAGS   := -eu -o pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS     += --no-builtin-rules --warn-undefined-variables

BUILD         ?= build
SEEDS         ?= data/demo-seeds
PARAMS        ?= default
PYTHON        ?= python3
DOCKER        ?= docker
DOCKER_SOCKET ?= /var/run/docker.sock
# auto: containers when a Docker daemon socket exists, else native; docker: insist; local: native.
RUNNER        ?= auto
# The vendor compiler image (docker load -i ax_pulsar2_<ver>.tar.gz). Used when it exists; otherwise
# the project's Pulsar2 EMULATOR runs, with a banner. Naming a missing image explicitly is an error.
PULSAR2_IMAGE ?= pulsar2:4.2
# Base of the training and board-emulator images; kws-base:bookworm = the local debootstrap image
# (invoke images.base) for machines without a registry.
BASE_IMAGE    ?= python:3.11-slim-bookworm
# Extra `docker run` flags for the pipeline stages, e.g. DOCKER_RUN_FLAGS="--gpus all" on a GPU host.
DOCKER_RUN_FLAGS ?=
HOLDOUT       ?=
# make eval-real REAL=<dir>: the commands recorded by people the model has never heard (a seeds-like folder).
REAL          ?=
# What the neural voice (Kokoro, about a CPU-second a word) has said, kept across builds: a rebuild of the voices
# stage says only what it has not said before, and writes the same files. Empty: no cache.
XDG_CACHE_HOME ?= $(HOME)/.cache
NEURAL_CACHE  ?= $(XDG_CACHE_HOME)/kws-ax630c/kokoro
# The model family: embedding (the frozen pretrained speech embedding + a trained head) or crnn (the seed's
# CRNN); pipeline/params/models/$(MODEL).toml holds what the family changes.
MODEL         ?= embedding
# The preset file; PARAMS names one in pipeline/params/presets/ (PRESET_FILE may point anywhere).
PRESET_FILE   ?= pipeline/params/presets/$(PARAMS).toml
MODEL_FILE    := pipeline/params/models/$(MODEL).toml

B      := $(BUILD)
IMAGES := $(B)/images
STAMPS := $(B)/stamps
GOALS  := $(filter-out help clean,$(or $(MAKECMDGOALS),all))

ifeq ($(wildcard $(PRESET_FILE)),)
$(error PARAMS=$(PARAMS): no preset file $(PRESET_FILE) (presets: $(basename $(notdir $(wildcard pipeline/params/presets/*.toml)))))
endif
ifeq ($(wildcard $(MODEL_FILE)),)
$(error MODEL=$(MODEL): no model family file $(MODEL_FILE) (families: $(basename $(notdir $(wildcard pipeline/params/models/*.toml)))))
endif

# ---- runner ------------------------------------------------------------------------------------
ifeq ($(RUNNER),auto)
RUNNER_USED := $(if $(wildcard $(DOCKER_SOCKET)),docker,local)
RUNNER_WHY  := $(if $(wildcard $(DOCKER_SOCKET)),found $(DOCKER_SOCKET),no $(DOCKER_SOCKET))
else ifneq ($(filter $(RUNNER),docker local),)
RUNNER_USED := $(RUNNER)
RUNNER_WHY  := RUNNER=$(RUNNER)
else
$(error RUNNER=$(RUNNER): expected auto, docker or local)
endif
ifneq ($(GOALS),)
ifeq ($(MAKE_RESTARTS),)
$(info runner: $(RUNNER_USED) ($(RUNNER_WHY)))
endif
endif

ifeq ($(RUNNER_USED),docker)
TRAIN_IMAGE   := $(IMAGES)/train.id
PULSAR2_EMU   := $(IMAGES)/pulsar2-emulator.id
# Every host path a stage sees is mounted at the same path in the container.
MOUNTS        := $(sort $(CURDIR) $(filter-out $(CURDIR)/%,$(abspath $(SEEDS) $(B) $(HOLDOUT) $(REAL) $(NEURAL_CACHE))))
# Files written in the container belong to the invoking user (-u); the image id reaches the manifests.
RUN            = $(DOCKER) run --rm --network none -u $$(id -u):$$(id -g) -e HOME=/tmp $(DOCKER_RUN_FLAGS) \
                 -e KWS_IMAGE_ID=$$(cat $(TRAIN_IMAGE)) $(foreach m,$(MOUNTS),-v $(m):$(m)) -w $(CURDIR) \
                 $$(cat $(TRAIN_IMAGE)) python3
else
TRAIN_IMAGE   :=
PULSAR2_EMU   :=
RUN            = $(PYTHON)
endif

# ---- inputs ------------------------------------------------------------------------------------
# Each stage rule depends on every project file its module imports: DEPS_<module>, generated from the import
# graph (pipeline.core.imports, stdlib only) whenever a source file changes, and read back in by make.
STAGE_MODULES := pipeline.stages.voices pipeline.stages.dataset pipeline.stages.features pipeline.stages.embeddings pipeline.stages.train \
                 pipeline.stages.export pipeline.stages.parity \
                 pipeline.stages.calib pipeline.stages.npu_inputs pipeline.stages.where pulsar2.config pulsar2.build \
                 pulsar2.quant_report pulsar2.int8_onnx pipeline.eval.holdout_tts pipeline.eval.detector_calib \
                 pipeline.eval.evaluate device.runtime.pack
PROJECT_PY    := $(wildcard pipeline/*.py pipeline/*/*.py pulsar2/*.py pulsar2/*/*.py device/*.py device/*/*.py)
DEPS_MK       := .make/deps.mk
ifneq ($(GOALS),)
include $(DEPS_MK)
endif
$(DEPS_MK): $(PROJECT_PY)
	$(PYTHON) -m pipeline.core.imports --makefile $@ $(STAGE_MODULES)

# Stamps: their recipes run on every make invocation (also under make -n: the + prefix) and rewrite a stamp
# only when its value changed. PARAM(stage) is that stage's resolved parameters, the --params of its recipe.
PARAM_STAGES  := $(basename $(basename $(notdir $(wildcard schemas/params/*.schema.json))))
PARAM_JSON    := $(foreach s,$(PARAM_STAGES) clip,$(B)/params/$(s).json)
PARAM          = $(B)/params/$(1).json
SEEDS_STAMP   := $(STAMPS)/seeds.json
VOCABULARY    := $(STAMPS)/vocabulary.json
COMPILER      := $(STAMPS)/pulsar2.json
.PHONY: FORCE
FORCE:

$(PARAM_JSON) &: FORCE
	+@$(PYTHON) -m pipeline.core.params --model $(MODEL_FILE) --preset $(PRESET_FILE) --out-dir $(B)/params

# The seed files by content (paths with spaces too): adding, removing or editing a seed rebuilds the dataset.
$(SEEDS_STAMP): FORCE
	+@$(PYTHON) -m pipeline.core.stamps tree '$(SEEDS)' $@

# The commands (class folders, words.toml): the synthetic voices and the TTS sets follow them.
$(VOCABULARY): FORCE
	+@$(PYTHON) -m pipeline.core.vocabulary '$(SEEDS)' --out $@

# Which compiler builds the axmodel (the vendor image and its id, or the emulator): loading the vendor image
# or naming it in PULSAR2_IMAGE rebuilds the axmodel and everything after it.
$(COMPILER): FORCE
	+@$(PYTHON) -m pulsar2.choice --runner $(RUNNER_USED) --image $(PULSAR2_IMAGE) \
	    --image-origin "$(origin PULSAR2_IMAGE)" --out $@

VOICES     := $(B)/voices/manifest.json
DATASET    := $(B)/dataset/manifest.json
FEATURES   := $(B)/features/manifest.json
EMBEDDINGS := $(B)/embeddings/manifest.json
CKPT       := $(B)/model/ckpt.pt
ONNX       := $(B)/model/kws.onnx
PARITY     := $(B)/reports/onnx_parity.json
CALIB      := $(B)/calib/calib_kws.tar
NPU_INPUTS := $(B)/npu_inputs/manifest.json
P2_CONFIG  := $(B)/pulsar2/kws_build_int8_config.json
AXMODEL    := $(B)/pulsar2/output/compiled.axmodel
# pulsar2.build writes its manifest last: the target, so that a build killed after the compiler wrote the
# axmodel but before it was checked is not mistaken for a finished one.
AXMODEL_MAN := $(B)/pulsar2/output/manifest.json
QUANT      := $(B)/reports/quant_report.json
HOLDOUT_DEV := $(B)/holdout-dev/manifest.json
DETECTOR   := $(B)/detector/settings.json
RUNTIME    := $(B)/runtime/runtime.json
INDEX      := $(B)/artifacts.txt

.PHONY: all voices dataset features embeddings train onnx parity calib npu-inputs config axmodel quant-report \
        demo-seeds demo-stream test test-fast lint clean help where holdout-tts holdout-dev detector eval eval-int8 \
        eval-real eval-real-int8

all: $(INDEX)                  ## everything: dataset ... compiled.axmodel, quant report, board inputs, detector, runtime
voices: $(VOICES)              ## the commands and keyword-free talk by synthetic speakers (espeak-ng)
dataset: $(DATASET)            ## augmented clips (as long as the features' window) + clips.jsonl
features: $(FEATURES)          ## packed log-Mel features float32[N,1,n_frames,n_mels]
embeddings: $(EMBEDDINGS)      ## the speech embedding of every clip, computed once (MODEL=embedding)
train: $(CKPT)                 ## trained model (the head, or the CRNN) + metrics
onnx: $(ONNX)                  ## ONNX export, gated on ONNX Runtime vs PyTorch parity
parity: $(PARITY)              ## the ONNX Runtime vs PyTorch parity report (reports/onnx_parity.json)
calib: $(CALIB)                ## Pulsar2 calibration tar (Numpy format)
npu-inputs: $(NPU_INPUTS)      ## per-sample input.bin folders + LF list.txt + labels.csv
config: $(P2_CONFIG)           ## schema-validated kws_build_int8_config.json
axmodel: $(AXMODEL_MAN)        ## compiled.axmodel (real Pulsar2 image if present, else the EMULATOR)
quant-report: $(QUANT)         ## INT8 vs FP32 agreement on held-back features
where:                         ## print where each artifact is
	@$(PYTHON) -m pipeline.stages.where --build $(B)
demo-seeds:                    ## regenerate data/demo-seeds (its words.toml) with espeak-ng + synthetic background
	$(PYTHON) -m pipeline.authoring.demo_seeds --words data/demo-seeds/words.toml --out data/demo-seeds
demo-stream:                   ## regenerate data/demo-stream (commands in a room, keyword-free talk) from the demo seeds
	$(PYTHON) -m pipeline.authoring.demo_stream --seeds data/demo-seeds --out data/demo-stream
LINTED_PY := pipeline pulsar2 device tests benchmarks docker tasks.py
LINTED_SH := device/remote/*.sh device/emulator/*.sh docker/*.sh install.sh .ci/run
lint:                          ## ruff on the Python, shellcheck on the shell (the board's scripts too)
	$(PYTHON) -m ruff check $(LINTED_PY)
	shellcheck $(LINTED_SH)
test: lint                     ## lint, then the whole test suite
	$(PYTHON) -m pytest
test-fast:                     ## the tests not marked slow, docker or ssh (about a minute on 2 cores)
	$(PYTHON) -m pytest -m "not slow and not docker and not ssh"
clean:                         ## delete $(BUILD)
	rm -rf $(B)
help:                          ## list targets
	@sed -n 's/^\([a-z-]*\):.*## \(.*\)/\1\t\2/p' $(MAKEFILE_LIST) | expand -t 16

# ---- pipeline ----------------------------------------------------------------------------------
# The commands and keyword-free talk by synthetic speakers, beside the user's seeds (espeak-ng from the image,
# so that the training data does not depend on the host's espeak-ng version). The neural voice's cache folder is
# made here, so that Docker does not make it (as root) for its mount.
$(VOICES): $(call PARAM,voices) $(VOCABULARY) $(SEEDS_STAMP) $(DEPS_pipeline.stages.voices) $(TRAIN_IMAGE)
	$(if $(NEURAL_CACHE),mkdir -p '$(NEURAL_CACHE)')
	$(RUN) -m pipeline.stages.voices --params $(call PARAM,voices) --vocabulary $(VOCABULARY) --seeds '$(SEEDS)' \
	    $(if $(NEURAL_CACHE),--neural-cache '$(abspath $(NEURAL_CACHE))') --out $(@D)

# The clips are as long as the features' window ([features] clip_samples, stamped alone in params/clip.json).
$(DATASET): $(call PARAM,dataset) $(call PARAM,clip) $(SEEDS_STAMP) $(VOICES) $(DEPS_pipeline.stages.dataset) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.dataset --params $(call PARAM,dataset) --clip $(call PARAM,clip) --seeds '$(SEEDS)' \
	    --extra-seeds $(B)/voices --out $(@D)

$(FEATURES): $(DATASET) $(call PARAM,features) $(DEPS_pipeline.stages.features) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.features --params $(call PARAM,features) --dataset $(<D) --out $(@D)

# The embedding family's head trains on the embeddings of the features, computed once.
$(EMBEDDINGS): $(FEATURES) $(DEPS_pipeline.stages.embeddings) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.embeddings --features $(<D) --out $(@D)

ifeq ($(MODEL),crnn)
TRAIN_ON   := $(FEATURES)
else
TRAIN_ON   := $(FEATURES) $(EMBEDDINGS)
endif
$(CKPT): $(TRAIN_ON) $(call PARAM,train) $(DEPS_pipeline.stages.train) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.train --params $(call PARAM,train) --features $(B)/features \
	    $(if $(filter-out crnn,$(MODEL)),--embeddings $(B)/embeddings) --out $(@D)

$(ONNX): $(CKPT) $(FEATURES) $(call PARAM,export) $(DEPS_pipeline.stages.export) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.export --params $(call PARAM,export) --ckpt $< --features $(B)/features --out $@

$(PARITY): $(ONNX) $(CKPT) $(FEATURES) $(call PARAM,export) $(DEPS_pipeline.stages.parity) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.parity --params $(call PARAM,export) --ckpt $(CKPT) --features $(B)/features \
	    --onnx $< --out $@

$(CALIB): $(FEATURES) $(call PARAM,calib) $(DEPS_pipeline.stages.calib) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.calib --params $(call PARAM,calib) --features $(<D) --out $@

$(NPU_INPUTS): $(FEATURES) $(call PARAM,npu_inputs) $(DEPS_pipeline.stages.npu_inputs) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.stages.npu_inputs --params $(call PARAM,npu_inputs) --features $(<D) --out $(@D)

# The artifact index: printed (and kept) once everything else is built.
# What the board runtime needs besides the axmodel (classes, contract, mel filterbank, calibrated detector).
$(RUNTIME): $(ONNX) $(DETECTOR) $(DEPS_device.runtime.pack) $(TRAIN_IMAGE)
	$(RUN) -m device.runtime.pack --onnx $(ONNX) --settings $(DETECTOR) --out $(@D)

$(INDEX): $(AXMODEL_MAN) $(QUANT) $(PARITY) $(NPU_INPUTS) $(RUNTIME) $(DEPS_pipeline.stages.where)
	$(PYTHON) -m pipeline.stages.where --build $(B) --out $@

# ---- Pulsar2 -----------------------------------------------------------------------------------
$(P2_CONFIG): $(ONNX) $(CALIB) $(call PARAM,pulsar2) $(DEPS_pulsar2.config) pulsar2/config.template.json \
              schemas/pulsar2-config.schema.json $(TRAIN_IMAGE)
	$(RUN) -m pulsar2.config --params $(call PARAM,pulsar2) --onnx $< --calib $(CALIB) --build $(B) --out $@

$(AXMODEL_MAN): $(P2_CONFIG) $(ONNX) $(CALIB) $(COMPILER) $(DEPS_pulsar2.build) $(wildcard pulsar2/emulator/*.py) $(PULSAR2_EMU)
	$(PYTHON) -m pulsar2.build --config $< --build $(B) --out $(AXMODEL) --choice $(COMPILER) \
	    --emulator-image-id "$(PULSAR2_EMU)"

$(QUANT): $(AXMODEL_MAN) $(ONNX) $(FEATURES) $(DEPS_pulsar2.quant_report) $(TRAIN_IMAGE)
	$(RUN) -m pulsar2.quant_report --axmodel $(AXMODEL) --onnx $(ONNX) --features $(B)/features --out $@

# ---- images (docker runner only) ---------------------------------------------------------------
# An image is a file: its id. A changed Dockerfile, lock file or baked-in source rebuilds the image and,
# through the id file, everything downstream of it (docker/README.md).
BOARD_EMU := $(IMAGES)/board-emulator.id
.PHONY: images
images: $(IMAGES)/train.id $(IMAGES)/pulsar2-emulator.id $(BOARD_EMU) ## the three Docker images (image ids in $BUILD/images/*.id)

$(IMAGES)/train.id: docker/train.Dockerfile docker/requirements.lock docker/smoke.py
	$(PYTHON) docker/build_image.py --name train --dockerfile $< --base-image $(BASE_IMAGE) --iidfile $@

$(IMAGES)/pulsar2-emulator.id: docker/pulsar2-emulator.Dockerfile $(IMAGES)/train.id $(wildcard pipeline/core/*.py) \
                               $(wildcard pulsar2/*.py pulsar2/*.json pulsar2/emulator/*.py schemas/*.json schemas/params/*.json) \
                               pulsar2/emulator/pulsar2
	$(PYTHON) docker/build_image.py --name pulsar2-emulator --dockerfile $< --from-iidfile $(IMAGES)/train.id --iidfile $@

$(BOARD_EMU): docker/board-emulator.Dockerfile docker/board-requirements.lock docker/smoke.py pulsar2/axmodel.py \
              $(wildcard device/emulator/*.py device/emulator/*.sh device/emulator/*/*.py)
	$(PYTHON) docker/build_image.py --name board-emulator --dockerfile $< --base-image $(BASE_IMAGE) --iidfile $@

# ---- evaluation ----------------------------------------------------------------------------------
# make eval HOLDOUT=<dir>: one folder per class (FONDO = keyword-free audio); default: the TTS holdout.
# The holdout path is remembered in a stamp so that switching HOLDOUT re-runs the evaluation.
HOLDOUT_TTS   := $(B)/holdout-tts/manifest.json
EVAL          := $(B)/eval/summary.json
EVAL_INT8     := $(B)/eval-int8/summary.json
EVAL_REAL     := $(B)/eval-real/summary.json
EVAL_REAL_INT8 := $(B)/eval-real-int8/summary.json
INT8_ONNX     := $(B)/pulsar2/output/emulated_int8.onnx
HOLDOUT_DIR   := $(or $(HOLDOUT),$(B)/holdout-tts)
# A user's holdout folder by content; the TTS holdout is a target of its own.
HOLDOUT_STAMP := $(if $(HOLDOUT),$(STAMPS)/holdout.json,$(HOLDOUT_TTS))

holdout-tts: $(HOLDOUT_TTS)    ## espeak-ng cross-speaker held-out set (voices training never uses) + Spanish negatives
holdout-dev: $(HOLDOUT_DEV)    ## espeak-ng development set (neither training nor evaluation voices) for the detector
detector: $(DETECTOR)          ## detector settings chosen and calibrated on the development set
eval: $(EVAL)                  ## held-out evaluation with leak check (make eval HOLDOUT=<dir>; default holdout-tts)
eval-int8: $(EVAL_INT8)        ## the same evaluation of the (EMULATED) INT8 axmodel: the NPU path on the holdout
eval-real: $(EVAL_REAL)        ## the commands by other people (REAL=<dir>) against the evaluation hour of talk, file by file
eval-real-int8: $(EVAL_REAL_INT8) ## the same on the (EMULATED) INT8 model inside the axmodel

# The TTS sets are spoken by the image's espeak-ng, like the voices stage.
$(HOLDOUT_TTS): $(call PARAM,holdout_tts) $(VOCABULARY) $(DEPS_pipeline.eval.holdout_tts) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.eval.holdout_tts --params $(call PARAM,holdout_tts) --out $(@D) \
	    --vocabulary $(VOCABULARY)

$(HOLDOUT_DEV): $(call PARAM,holdout_tts) $(VOCABULARY) $(DEPS_pipeline.eval.holdout_tts) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.eval.holdout_tts --params $(call PARAM,holdout_tts) --split dev --out $(@D) \
	    --vocabulary $(VOCABULARY)

$(DETECTOR): $(ONNX) $(HOLDOUT_DEV) $(call PARAM,detector) $(DEPS_pipeline.eval.detector_calib) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.eval.detector_calib --params $(call PARAM,detector) --onnx $(ONNX) --dev $(B)/holdout-dev --out $(@D)

$(STAMPS)/holdout.json: FORCE
	+@$(PYTHON) -m pipeline.core.stamps tree '$(HOLDOUT)' $@

# A folder of commands by other people (one folder per command, as seeds are; its FONDO is not used) is judged
# against the evaluation hour of talk: how many the detector finds, and what finding each one costs in false accepts.
$(STAMPS)/real.json: FORCE
	$(if $(REAL),,$(error make eval-real: give REAL=<folder> with one folder per command holding other people's recordings, e.g. REAL=../shared/seeds-asrc))
	+@$(PYTHON) -m pipeline.core.stamps tree '$(REAL)' $@

$(EVAL_REAL) $(EVAL_REAL_INT8): $(B)/%/summary.json: $(DATASET) $(DETECTOR) $(HOLDOUT_TTS) $(STAMPS)/real.json \
                                $(DEPS_pipeline.eval.evaluate) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.eval.evaluate --onnx $(if $(filter eval-real-int8,$*),$(INT8_ONNX),$(ONNX)) --holdout '$(REAL)' \
	    --negatives $(B)/holdout-tts/FONDO --out $(@D) --train-manifest $(DATASET) --seeds '$(SEEDS)' --settings $(DETECTOR)
$(EVAL_REAL): $(ONNX)
$(EVAL_REAL_INT8): $(INT8_ONNX)

$(EVAL): $(ONNX) $(DATASET) $(DETECTOR) $(HOLDOUT_STAMP) $(DEPS_pipeline.eval.evaluate) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.eval.evaluate --onnx $(ONNX) --holdout '$(HOLDOUT_DIR)' --out $(@D) \
	    --train-manifest $(DATASET) --seeds '$(SEEDS)' --settings $(DETECTOR)

# The INT8 model inside the EMULATED axmodel as an ONNX file (a real axmodel is refused: it runs on the board).
$(INT8_ONNX): $(AXMODEL_MAN) $(ONNX) $(DEPS_pulsar2.int8_onnx) $(TRAIN_IMAGE)
	$(RUN) -m pulsar2.int8_onnx --axmodel $(AXMODEL) --onnx $(ONNX) --out $@

$(EVAL_INT8): $(INT8_ONNX) $(DATASET) $(DETECTOR) $(HOLDOUT_STAMP) $(DEPS_pipeline.eval.evaluate) $(TRAIN_IMAGE)
	$(RUN) -m pipeline.eval.evaluate --onnx $(INT8_ONNX) --holdout '$(HOLDOUT_DIR)' --out $(@D) \
	    --train-manifest $(DATASET) --seeds '$(SEEDS)' --settings $(DETECTOR)
