// The translation unit that compiles the precompiled <torch/torch.h>
// (cmake/memcnn_build_time.cmake); it defines nothing.
