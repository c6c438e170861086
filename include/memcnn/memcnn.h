#pragma once
// memcnn: memory-efficient invertible neural networks on LibTorch.

#include "memcnn/autocast.h"
#include "memcnn/checkpoint.h"
#include "memcnn/coupling.h"
#include "memcnn/drift.h"
#include "memcnn/fixed_point.h"
#include "memcnn/invertible_module.h"
#include "memcnn/invertible_sequential.h"
#include "memcnn/is_invertible.h"
#include "memcnn/layers.h"
#include "memcnn/log.h"
#include "memcnn/memory.h"
#include "memcnn/rng.h"
#include "memcnn/wrapper.h"
