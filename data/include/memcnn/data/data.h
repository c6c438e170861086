#pragma once
// Everything in memcnn::data.

#include <memcnn/data/cifar.h>
#include <memcnn/data/dataset.h>
#include <memcnn/data/download.h>
#include <memcnn/data/fashion_mnist.h>
#include <memcnn/data/image_quality.h>
#include <memcnn/data/image_translation.h>
#include <memcnn/data/loader.h>
#include <memcnn/data/nifti.h>
#include <memcnn/data/superresolution.h>
