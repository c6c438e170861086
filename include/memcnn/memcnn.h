#pragma once
// memcnn: memory-efficient invertible neural networks on LibTorch.

#include "memcnn/coupling.h"
#include "memcnn/invertible_module.h"
#include "memcnn/is_invertible.h"
#include "memcnn/log.h"
#include "memcnn/memory.h"
#include "memcnn/rng.h"
#include "memcnn/wrapper.h"
