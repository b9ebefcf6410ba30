# lcm.c build.
#
#   make              build ./lcm (CPU backend always; CUDA backend when the toolkit is found)
#   make test         build and run every test this machine can run; ends with "N passed, N failed"
#   make asan / tsan  the same tests under AddressSanitizer+UBSan / ThreadSanitizer (CPU build)
#   make debug        -O0 -g build in build/debug
#   make bench        CPU step benchmark (toy and medium configs)
#   make comm-bench   build/tools/comm_bench: the comm level's all-reduce time (also under mpirun)
#   make run          train the embedded default config (./lcm train)
#   make test-gpu     CUDA-vs-CPU checks (needs a GPU)
#   make fuzz         libFuzzer harnesses (clang), FUZZ_SECONDS each (tests/fuzz/, docs/reliability.md)
#
# Knobs: CUDA=auto|0|1  CUDA_HOME=/usr/local/cuda  NCCL_HOME=$(CUDA_HOME)  CUDA_ARCH="80 86 89 90"
#        MPI=auto|0|1   MPI_PKG=mpi-c (pkg-config name; or MPI_CFLAGS=... MPI_LIBS=...)
#        CUDNN=auto|0|1  CUDNN_HOME=$(CUDA_HOME)  CUDNN_FRONTEND=build/cudnn-frontend/include
#        BUILD=build    CC=cc   CXX=c++   EXTRA_CFLAGS=...
# cuDNN (fused attention, model.attention) needs cudnn.h + libcudnn under CUDNN_HOME and the cuDNN frontend's
# headers (`tools/install-deps.sh --cudnn-frontend` puts them in build/cudnn-frontend/include).

CC        ?= cc
BUILD     ?= build
CUDA      ?= auto
CUDA_HOME ?= /usr/local/cuda
NCCL_HOME ?= $(CUDA_HOME)
CUDA_ARCH ?= 80 86 89 90
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CUDNN     ?= auto
CUDNN_HOME ?= $(CUDA_HOME)
CUDNN_FRONTEND ?= build/cudnn-frontend/include
CXX       ?= c++
OPT       ?= -O2

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

# ---- which backends: decided explicitly and said out loud --------------------------------------
have_nvcc := $(wildcard $(NVCC))
have_nccl := $(wildcard $(NCCL_HOME)/include/nccl.h)
ifeq ($(CUDA),0)
  WITH_CUDA := 0
  cuda_why  := CUDA=0 given
else ifeq ($(CUDA),1)
  ifeq ($(have_nvcc),)
    $(error CUDA=1 but no nvcc at $(NVCC); set CUDA_HOME to the CUDA toolkit or build with CUDA=0)
  endif
  ifeq ($(have_nccl),)
    $(error CUDA=1 but no nccl.h under $(NCCL_HOME)/include; set NCCL_HOME or build with CUDA=0)
  endif
  WITH_CUDA := 1
  cuda_why  := CUDA=1 given; nvcc $(NVCC), NCCL $(NCCL_HOME)
else ifeq ($(CUDA),auto)
  ifeq ($(have_nvcc),)
    WITH_CUDA := 0
    cuda_why  := no nvcc at $(NVCC) (set CUDA_HOME, or CUDA=1 to insist)
  else ifeq ($(have_nccl),)
    WITH_CUDA := 0
    cuda_why  := nvcc found but no nccl.h under $(NCCL_HOME)/include (set NCCL_HOME)
  else
    WITH_CUDA := 1
    cuda_why  := found nvcc $(NVCC) and NCCL $(NCCL_HOME)
  endif
else
  $(error CUDA must be auto, 0 or 1, not '$(CUDA)')
endif
# cuDNN, like NCCL: found or not, and said; CUDNN=1 insists, CUDNN=0 leaves it out.
have_cudnn := $(wildcard $(CUDNN_HOME)/include/cudnn.h)
have_cudnn_fe := $(wildcard $(CUDNN_FRONTEND)/cudnn_frontend.h)
ifeq ($(CUDNN),0)
  WITH_CUDNN := 0
  cudnn_why  := CUDNN=0 given
else ifeq ($(CUDNN),1)
  ifneq ($(WITH_CUDA),1)
    $(error CUDNN=1 but the CUDA backend is not built ($(cuda_why)))
  endif
  ifeq ($(have_cudnn),)
    $(error CUDNN=1 but no cudnn.h under $(CUDNN_HOME)/include; set CUDNN_HOME or build with CUDNN=0)
  endif
  ifeq ($(have_cudnn_fe),)
    $(error CUDNN=1 but no cudnn_frontend.h in $(CUDNN_FRONTEND); run tools/install-deps.sh --cudnn-frontend or set CUDNN_FRONTEND)
  endif
  WITH_CUDNN := 1
  cudnn_why  := CUDNN=1 given
else ifeq ($(CUDNN),auto)
  ifneq ($(WITH_CUDA),1)
    WITH_CUDNN := 0
    cudnn_why  := no CUDA backend
  else ifeq ($(have_cudnn),)
    WITH_CUDNN := 0
    cudnn_why  := no cudnn.h under $(CUDNN_HOME)/include
  else ifeq ($(have_cudnn_fe),)
    WITH_CUDNN := 0
    cudnn_why  := no cuDNN frontend headers in $(CUDNN_FRONTEND) (tools/install-deps.sh --cudnn-frontend)
  else
    WITH_CUDNN := 1
    cudnn_why  := found cuDNN $(CUDNN_HOME) and its frontend $(CUDNN_FRONTEND)
  endif
else
  $(error CUDNN must be auto, 0 or 1, not '$(CUDNN)')
endif
ifeq ($(MAKELEVEL),0)
  ifeq ($(WITH_CUDA),1)
    $(info lcm build: backends cpu + cuda ($(cuda_why); CUDA_ARCH=$(CUDA_ARCH)))
    $(info lcm build: cuDNN attention $(if $(filter 1,$(WITH_CUDNN)),on,off) ($(cudnn_why)))
  else
    $(info lcm build: backend cpu only ($(cuda_why)))
  endif
endif

# MPI (more than one process: README "Several machines"): found through pkg-config, like the
# Debian package libopenmpi-dev provides it. Without it lcm is built for one process.
MPI     ?= auto
MPI_PKG ?= mpi-c
ifeq ($(MPI),0)
  WITH_MPI := 0
  mpi_why  := MPI=0 given
else
  MPI_CFLAGS ?= $(shell pkg-config --cflags $(MPI_PKG) 2>/dev/null)
  MPI_LIBS   ?= $(shell pkg-config --libs $(MPI_PKG) 2>/dev/null)
  have_mpi := $(shell pkg-config --exists $(MPI_PKG) 2>/dev/null && echo yes)
  ifneq ($(MPI_LIBS),)
    have_mpi := yes
  endif
  ifeq ($(have_mpi),yes)
    WITH_MPI := 1
    mpi_why  := $(MPI_PKG) found
  else ifeq ($(MPI),1)
    $(error MPI=1 but pkg-config knows no $(MPI_PKG); install MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) or set MPI_CFLAGS and MPI_LIBS)
  else
    WITH_MPI := 0
    mpi_why  := no $(MPI_PKG) from pkg-config: one process only (apt-get install openmpi-bin libopenmpi-dev for more)
  endif
endif
ifeq ($(MAKELEVEL),0)
  ifeq ($(WITH_MPI),1)
    $(info lcm build: MPI for several processes ($(mpi_why)))
  else
    $(info lcm build: no MPI ($(mpi_why)))
  endif
endif

# ---- flags -------------------------------------------------------------------------------------
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wvla
CPPFLAGS := -Iinclude -D_GNU_SOURCE -DLCM_VERSION='"$(VERSION)"' -DLCM_GIT_REV='"$(GIT_REV)"' \
            -DLCM_WITH_CUDA=$(WITH_CUDA) -DLCM_WITH_MPI=$(WITH_MPI) -DLCM_WITH_CUDNN=$(WITH_CUDNN)
CFLAGS   := -std=c11 $(OPT) -g $(WARN) -pthread -fno-strict-aliasing -MMD -MP $(EXTRA_CFLAGS)
LDLIBS   := -liniparser -lopenblas -lm -pthread
LDFLAGS  := $(EXTRA_LDFLAGS)
ifeq ($(WITH_MPI),1)
  CPPFLAGS += $(MPI_CFLAGS)
  LDLIBS   += $(MPI_LIBS)
endif

NVCCFLAGS := -std=c++17 -O3 -g -Iinclude -DLCM_WITH_CUDA=1 -DLCM_WITH_CUDNN=$(WITH_CUDNN) -I$(NCCL_HOME)/include \
             --expt-relaxed-constexpr -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter \
             $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) -MMD -MP
ifeq ($(WITH_CUDA),1)
  CPPFLAGS += -isystem $(CUDA_HOME)/include -isystem $(NCCL_HOME)/include
  LDLIBS   += -L$(CUDA_HOME)/lib64 -L$(NCCL_HOME)/lib -Wl,-rpath,$(CUDA_HOME)/lib64 \
              -lcublasLt -lcublas -lcudart -lnccl -lstdc++
endif
# The one C++ file (src/backend/cuda/cuda_cudnn.cpp): the frontend's headers as system headers, so that
# -Werror applies to our code only. It opens libcudnn.so.9 (and NVRTC) at run time, not at link time, so
# that the binary starts where cuDNN is missing; the rpath lets it find the toolkit's copy.
CXXFLAGS := -std=c++17 $(OPT) -g -Wall -Wextra -Werror -Wno-unused-parameter -pthread -MMD -MP $(EXTRA_CXXFLAGS)
ifeq ($(WITH_CUDNN),1)
  CXXFLAGS += -isystem $(CUDNN_HOME)/include -isystem $(CUDNN_FRONTEND)
  LDLIBS   := $(filter-out -lstdc++,$(LDLIBS)) -L$(CUDNN_HOME)/lib64 -L$(CUDNN_HOME)/lib \
              -Wl,-rpath,$(CUDNN_HOME)/lib64 -ldl -lstdc++
endif

# ---- sources: each directory of src/ is one concern (see docs/architecture.md) -----------------
# CUDA-only host files live in directories named cuda/ (src/backend/cuda, src/comm/cuda); the
# fallbacks that report "built without CUDA" live in src/nocuda/.
ALL_C    := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
# (filter takes one % per pattern, so /cuda/ anywhere in the path is found with findstring)
CUDA_C   := $(foreach f,$(ALL_C),$(if $(findstring /cuda/,$(f)),$(f)))
NOCUDA_C := $(filter src/nocuda/%,$(ALL_C))
ifeq ($(WITH_CUDA),1)
  LIB_C  := $(filter-out $(NOCUDA_C),$(ALL_C))
  LIB_CU := $(shell find src -name '*.cu' | sort)
else
  LIB_C  := $(filter-out $(CUDA_C),$(ALL_C))
  LIB_CU :=
endif
ifeq ($(WITH_CUDNN),1)
  LIB_CPP := $(shell find src -name '*.cpp' | sort)
else
  LIB_CPP :=
endif
LIB_C    := $(sort $(LIB_C))
LIB_OBJ  := $(LIB_C:%.c=$(BUILD)/%.o) $(LIB_CU:%.cu=$(BUILD)/%.cu.o) $(LIB_CPP:%.cpp=$(BUILD)/%.cpp.o)
TEST_C   := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_C:tests/%.c=$(BUILD)/tests/%)
TEST_CU_C   := $(sort $(wildcard tests/gpu/test_*.c))
TEST_GPU_BIN := $(TEST_CU_C:tests/gpu/%.c=$(BUILD)/tests/gpu/%)
CONF_INI := $(sort $(shell find conf -name '*.ini'))

.PHONY: all test asan tsan debug bench run test-gpu clean deps fuzz fuzz-build comm-bench FORCE
.DEFAULT_GOAL := all

all: lcm

lcm: $(BUILD)/lcm
	@ln -sf $(BUILD)/lcm lcm

$(BUILD)/lcm: $(BUILD)/src/main.o $(BUILD)/liblcm.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/liblcm.a: $(LIB_OBJ) $(BUILD)/src/conf_embedded.o
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# CUDA objects depend on the nvcc flags (CUDA_ARCH above all): the stamp changes when they do.
$(BUILD)/%.cu.o: %.cu $(BUILD)/.nvcc-flags
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

# The cuDNN file depends on whether cuDNN is built in (the same stamp idea: the flags it is built with).
# (Not $(CPPFLAGS): its git revision would rebuild this slow file at every commit.)
CXX_CPPFLAGS := -Iinclude -D_GNU_SOURCE -DLCM_WITH_CUDA=$(WITH_CUDA) -DLCM_WITH_CUDNN=$(WITH_CUDNN) \
                -isystem $(CUDA_HOME)/include
$(BUILD)/%.cpp.o: %.cpp $(BUILD)/.cxx-flags
	@mkdir -p $(dir $@)
	$(CXX) $(CXX_CPPFLAGS) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/.cxx-flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CXX) $(CXX_CPPFLAGS) $(CXXFLAGS)' | cmp -s - $@ || echo '$(CXX) $(CXX_CPPFLAGS) $(CXXFLAGS)' > $@

# traits.c sizes the cuDNN workspace only when cuDNN is built in: rebuilt when that changes.
$(BUILD)/src/backend/traits.o: $(BUILD)/.cudnn-flag
$(BUILD)/.cudnn-flag: FORCE
	@mkdir -p $(BUILD)
	@echo '$(WITH_CUDNN)' | cmp -s - $@ || echo '$(WITH_CUDNN)' > $@

$(BUILD)/.nvcc-flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(NVCC) $(NVCCFLAGS)' | cmp -s - $@ || echo '$(NVCC) $(NVCCFLAGS)' > $@
FORCE:

# The conf/ tree is compiled into the binary so that `./lcm train` works from any directory.
$(BUILD)/src/conf_embedded.c: $(CONF_INI) tools/embed_conf.sh
	@mkdir -p $(dir $@)
	sh tools/embed_conf.sh $(CONF_INI) > $@
$(BUILD)/src/conf_embedded.o: $(BUILD)/src/conf_embedded.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# System packages: installed (or the exact command printed) once per build directory.
$(BUILD)/.deps-ok: tools/install-deps.sh
	@mkdir -p $(BUILD)
	@tools/install-deps.sh
	@touch $@
deps: $(BUILD)/.deps-ok

$(BUILD)/tests/%: tests/%.c tests/harness.h $(BUILD)/liblcm.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/liblcm.a $(LDFLAGS) $(LDLIBS)

# ./lcm points at the normal build only: after `make asan` or `make tsan` it stays the fast binary.
# With the CUDA backend the GPU test binaries are built too (not run: make test-gpu), so that a change
# that breaks them fails every build, CI's included.
test: $(BUILD)/lcm $(TEST_BIN) $(if $(filter 1,$(WITH_CUDA)),$(TEST_GPU_BIN))
	@tools/install-deps.sh --python
	@$(if $(filter build,$(BUILD)),ln -sf $(BUILD)/lcm lcm,true)
	@$(TEST_ENV) LCM_BIN=$(BUILD)/lcm sh tests/run.sh $(TEST_BIN)

TEST_ENV ?=
asan:
	@$(MAKE) --no-print-directory BUILD=build/asan CUDA=0 OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" test

# OpenBLAS's own threads are not instrumented: under TSan, BLAS runs in the calling thread.
tsan:
	@$(MAKE) --no-print-directory BUILD=build/tsan CUDA=0 OPT=-O1 TEST_ENV=OPENBLAS_NUM_THREADS=1 \
	  EXTRA_CFLAGS="-fsanitize=thread" EXTRA_LDFLAGS="-fsanitize=thread" test

# libFuzzer harnesses (tests/fuzz/): the library built by clang with -fsanitize=fuzzer-no-link and
# ASan+UBSan in its own directory, each harness linked with -fsanitize=fuzzer, then run for
# FUZZ_SECONDS each on seeds that lcm writes (tests/fuzz/run.sh ends with "N passed, N failed").
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config npy lcmd safetensors json
FUZZ_CC      ?= clang
FUZZ_BUILD   := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# clang (not gcc) warns on '|' between overflow checks, which dataset.c uses on purpose (all are evaluated).
# FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (libFuzzer's convention): stored checksums are computed but a
# mismatch does not stop the load, so mutated files reach the code behind the checksum check.
FUZZ_WARN    := -Wno-bitwise-instead-of-logical -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
fuzz: fuzz-build
	@LCM_BIN=$(BUILD)/lcm FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TARGETS)
fuzz-build: $(BUILD)/lcm
	@echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }' | \
	  $(FUZZ_CC) -x c -fsanitize=fuzzer -o $(BUILD)/.fuzz-check - 2>/dev/null || { echo "make fuzz needs \
	  $(FUZZ_CC) with libFuzzer (Debian: apt-get install clang libclang-rt-<version>-dev)" >&2; exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CUDA=0 MPI=0 CC=$(FUZZ_CC) OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN) $(FUZZ_WARN)" $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_BUILD)/liblcm.a
	$(CC) $(CPPFLAGS) -DFUZZ_TINY_INI='"$(abspath tests/fuzz/tiny.ini)"' $(CFLAGS) -fsanitize=fuzzer -o $@ $< \
	  $(FUZZ_BUILD)/liblcm.a $(LDFLAGS) $(LDLIBS)

# The comm level's all-reduce time, in one process or under mpirun (docs/performance.md).
comm-bench: $(BUILD)/tools/comm_bench
$(BUILD)/tools/%: tools/%.c $(BUILD)/liblcm.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/liblcm.a $(LDFLAGS) $(LDLIBS)

debug:
	@$(MAKE) --no-print-directory BUILD=build/debug OPT=-O0 all
	@ln -sf build/debug/lcm lcm

# CPU step benchmark (figures in docs/performance.md); GPUs: tools/gpu_check.sh or lcm bench directly.
bench: $(BUILD)/lcm
	$(BUILD)/lcm bench conf/model/toy.ini trainer.devices=cpu
	$(BUILD)/lcm bench conf/model/medium.ini trainer.devices=cpu data.max_tokens=1024 bench.warmup_steps=1 bench.steps=3

run: $(BUILD)/lcm
	@ln -sf $(BUILD)/lcm lcm
	./lcm train

ifeq ($(WITH_CUDA),1)
$(BUILD)/tests/gpu/%: tests/gpu/%.c tests/harness.h $(BUILD)/liblcm.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(BUILD)/liblcm.a $(LDFLAGS) $(LDLIBS)
gpu-tests: $(TEST_GPU_BIN)
test-gpu: $(BUILD)/lcm $(TEST_GPU_BIN)
	@LCM_BIN=$(BUILD)/lcm sh tests/run.sh $(TEST_GPU_BIN)
else
gpu-tests test-gpu:
	@echo "test-gpu needs the CUDA backend: $(cuda_why)" >&2; exit 1
endif

clean:
	rm -rf build lcm

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
