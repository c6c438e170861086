#pragma once
/// @file
/// Everything in memcnn::data.

#include <memcnn/data/cifar.h>
#include <memcnn/data/dataset.h>
#include <memcnn/data/download.h>
#include <memcnn/data/fashion_mnist.h>
#include <memcnn/data/image_quality.h>
#include <memcnn/data/image_translation.h>
#include <memcnn/data/loader.h>
#include <memcnn/data/nifti.h>
#include <memcnn/data/superresolution.h>

/// @namespace memcnn::data
/// @brief Data sets and their loading (the memcnn::data component, library memcnn_data).
///
/// Readers for CIFAR-10/100 (downloaded and verified when missing) and Fashion-MNIST, a
/// deterministic, threaded mini-batch loader with augmentation and data-parallel sharding, and
/// NIfTI volume reading and writing for 3-D models; the RevGAN tasks' data and figures: 3-D
/// super-resolution of ch2, Fashion-MNIST edges to images, PSNR, SSIM and L1.
