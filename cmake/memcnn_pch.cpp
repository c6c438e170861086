// The translation unit that compiles the precompiled <torch/torch.h>
// (cmake/memcnn_precompiled_headers.cmake); it defines nothing.
