#pragma once
// The small model, optimizers and recipe that the checkpoint target resumes into and that its seed
// checkpoints were saved from (fuzz/make_seeds.cpp), so the seeds load and the fuzzer starts deep.

#include <memcnn/train/config.h>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <memory>

namespace memcnn::fuzz {

// A linear layer (parameters) and a batch norm (parameters and buffers, one of them int64).
inline torch::nn::Sequential checkpoint_model() {
  return torch::nn::Sequential(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
}

// Both optimizers the trainer offers, with per-parameter state (momentum; Adam's moments).
inline std::unique_ptr<torch::optim::Optimizer> checkpoint_optimizer(torch::nn::Sequential& model, bool adamw) {
  if (adamw) return std::make_unique<torch::optim::AdamW>(model->parameters(), torch::optim::AdamWOptions(1e-3));
  return std::make_unique<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
}

inline train::Json checkpoint_recipe(bool adamw) {
  train::TrainConfig config;
  config.model = "fuzz";
  config.dataset = "fuzz";
  config.optimizer = adamw ? "adamw" : "sgd";
  return config.to_json();
}

}  // namespace memcnn::fuzz
