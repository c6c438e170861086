// Uses the core and each installed component once, so a missing header, library or dependency
// of any of them fails to configure, compile, link or run.
#include <memcnn/data/loader.h>
#include <memcnn/data/nifti.h>
#include <memcnn/distributed/process_group.h>
#include <memcnn/memcnn.h>
#include <memcnn/models/resnet.h>
#include <memcnn/train/config.h>

#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <string>

#include <unistd.h>

int main() {
  memcnn::AdditiveCoupling coupling(torch::nn::Linear(2, 2));
  if (!memcnn::is_invertible_module(coupling, {3, 4})) return 1;

  auto model = memcnn::models::make_model("revnet38");  // models
  if (memcnn::models::count_parameters(*model) != 573994) return 2;

  memcnn::data::Dataset images;  // data
  images.images = torch::randint(0, 256, {8, 3, 8, 8}, torch::kByte);
  images.labels = torch::arange(8);
  images.num_classes = 8;
  memcnn::data::BatchLoader loader(images, memcnn::data::mean_image(images),
                                   memcnn::data::LoaderOptions().batch_size(4).workers(0));
  if (loader.batch(1).images.size(0) != 4) return 3;
  // data's NIfTI volumes, through nifticlib
  const std::string volume =
      (std::filesystem::temp_directory_path() / ("memcnn-consumer-" + std::to_string(::getpid()) + ".nii.gz")).string();
  memcnn::data::write_nifti(volume, torch::ones({2, 3, 4}, torch::kUInt8), {1.0, 1.0, 1.0});
  const bool volume_read = memcnn::data::read_nifti(volume).data.sum().item<int64_t>() == 24;
  std::filesystem::remove(volume);
  if (!volume_read) return 6;

  const auto config = memcnn::train::TrainConfig::from_json(  // train
      memcnn::train::experiment_for(memcnn::train::default_experiments(), "revnet38", "cifar10"));
  if (config.batch_size != 100) return 4;

  // distributed: no WORLD_SIZE in this lookup, so one process
  if (memcnn::distributed::Environment::from_environment([](const std::string&) { return std::nullopt; })) return 5;
  std::cout << "consumer: core, models, data, distributed and train from the installed package" << std::endl;
  return 0;
}
