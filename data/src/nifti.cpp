#include <memcnn/data/nifti.h>

// nifticlib's "nifti2" library reads NIfTI-1 and NIfTI-2 (its "niftiio" reads NIfTI-1 only; the
// two export the same names, so only one may be linked). HAVE_ZLIB, with which Debian builds it,
// declares the gzFile inside a znzFile, whose zlib status read_nifti checks.
#ifndef HAVE_ZLIB
#define HAVE_ZLIB 1
#endif
#include <nifti2_io.h>
#include <zlib.h>

#include <ATen/ops/from_blob.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

namespace memcnn::data {

namespace detail {
// A nifti_image without voxels (data is NULL; read_nifti reads them into the tensor).
struct NiftiHeader {
  nifti_image* image = nullptr;
  explicit NiftiHeader(nifti_image* owned) : image(owned) {}
  ~NiftiHeader() { nifti_image_free(image); }
  NiftiHeader(const NiftiHeader&) = delete;
  NiftiHeader& operator=(const NiftiHeader&) = delete;
};
}  // namespace detail

namespace {
namespace fs = std::filesystem;

struct ImageFree {
  void operator()(nifti_image* image) const { nifti_image_free(image); }
};
using ImagePtr = std::unique_ptr<nifti_image, ImageFree>;

// A znzFile closed on every path out (znzclose is a macro that also nulls the handle).
struct ZnzCloser {
  znzFile file = nullptr;
  ~ZnzCloser() {
    if (file) znzclose(file);
  }
};

constexpr int64_t kNifti1HeaderBytes = 348;
constexpr int64_t kNifti2HeaderBytes = 540;
constexpr int64_t kNifti1MaxDim = 32767;  // dims are int16 in a NIfTI-1 header
// The most bytes of extensions read (nifti.h); real ones (AFNI, CIFTI-2 XML) hold kilobytes.
constexpr int64_t kMaxExtensionBytes = int64_t{64} << 20;
// A .nii.gz's voxel buffer starts this large and doubles as voxels arrive.
constexpr int64_t kFirstVoxelBytes = int64_t{1} << 20;

// At its default level (1) nifticlib prints warnings and progress to stderr; at 0 it prints
// only some errors, and read_nifti checks the header first so that bad files rarely reach it.
// The level is global to nifticlib: a program's own use of it is quietened too.
void quiet_nifticlib() {
  static const bool done = [] {
    nifti_set_debug_level(0);
    return true;
  }();
  (void)done;
}

std::string where(const std::string& path) { return "NIfTI file '" + path + "': "; }

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// true for .nii.gz, false for .nii; anything else throws. nifticlib picks gzip by the name.
bool is_gzip_name(const std::string& path, const char* function) {
  if (ends_with(path, ".nii.gz")) return true;
  TORCH_CHECK_VALUE(ends_with(path, ".nii"), function, "('", path,
                    "'): the name must end in .nii or .nii.gz (single-file NIfTI; gzip'd when .gz)");
  return false;
}

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << "]";
  return out.str();
}

std::string printable_magic(const char* magic, size_t size) {
  std::ostringstream out;
  for (size_t i = 0; i < size; ++i) {
    const auto c = static_cast<unsigned char>(magic[i]);
    if (c >= 32 && c < 127 && c != '\\') {
      out << static_cast<char>(c);
    } else {
      static const char* digits = "0123456789abcdef";
      out << "\\x" << digits[c >> 4] << digits[c & 15];
    }
  }
  return out.str();
}

std::string datatype_name(int code) {
  return std::string(nifti_datatype_string(code)) + " (" + std::to_string(code) + ")";
}

const char* kSupported = "uint8, int8, int16, uint16, int32, uint32, int64, float32, float64";

// The dtype of the buffer nifticlib fills for a stored datatype (uint16/uint32 are read as their
// signed twins, then widened); nullopt when unsupported.
std::optional<torch::Dtype> buffer_dtype(int datatype) {
  switch (datatype) {
    case DT_UINT8: return torch::kUInt8;
    case DT_INT8: return torch::kInt8;
    case DT_INT16:
    case DT_UINT16: return torch::kInt16;
    case DT_INT32:
    case DT_UINT32: return torch::kInt32;
    case DT_INT64: return torch::kInt64;
    case DT_FLOAT32: return torch::kFloat32;
    case DT_FLOAT64: return torch::kFloat64;
    default: return std::nullopt;
  }
}

// The datatype written for a tensor's dtype.
int datatype_for(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kUInt8: return DT_UINT8;
    case torch::kInt8: return DT_INT8;
    case torch::kInt16: return DT_INT16;
    case torch::kInt32: return DT_INT32;
    case torch::kInt64: return DT_INT64;
    case torch::kFloat32: return DT_FLOAT32;
    case torch::kFloat64: return DT_FLOAT64;
    default: return DT_UNKNOWN;
  }
}

void check_readable(const std::string& path) {
  std::error_code error;
  const auto status = fs::status(path, error);
  const bool missing = !error || error == std::errc::no_such_file_or_directory;
  TORCH_CHECK(fs::exists(status), where(path), missing ? std::string("no such file") : error.message());
  TORCH_CHECK(fs::is_regular_file(status), where(path), "not a regular file");
  TORCH_CHECK(::access(path.c_str(), R_OK) == 0, where(path), "cannot be read: ", std::strerror(errno));
}

// What read_nifti needs from the header before handing the file to nifticlib, which returns
// NULL with no reason for a bad header (or, for a wrong NIfTI-1 magic, reads it as ANALYZE 7.5):
// each check here names the problem instead. Read through nifticlib's znz layer and laid out,
// and byte-swapped, by its own header structs and functions.
// Returns the NIfTI version, 1 or 2.
int check_header(const std::string& path, bool gz, const NiftiReadOptions& options) {
  ZnzCloser in{znzopen(path.c_str(), "rb", gz ? 1 : 0)};
  TORCH_CHECK(!znz_isnull(in.file), where(path), "cannot be opened");
  unsigned char bytes[kNifti2HeaderBytes] = {};
  const size_t got = znzread(bytes, 1, sizeof(bytes), in.file);
  // znzread hands back gzread's -1 (as a size_t) when the compressed stream is corrupt.
  TORCH_CHECK(got <= sizeof(bytes), where(path), "corrupt gzip data at the start of the file");
  const int64_t have = static_cast<int64_t>(got);
  TORCH_CHECK(have >= 4, where(path), "truncated: ", have, " bytes", gz ? " after decompression" : "",
              ", too short for a NIfTI header (348 bytes for NIfTI-1, 540 for NIfTI-2)");

  int32_t sizeof_hdr = 0;
  std::memcpy(&sizeof_hdr, bytes, 4);
  bool swapped = false;
  if (sizeof_hdr != kNifti1HeaderBytes && sizeof_hdr != kNifti2HeaderBytes) {
    int32_t flipped = sizeof_hdr;
    nifti_swap_4bytes(1, &flipped);
    if (flipped == kNifti1HeaderBytes || flipped == kNifti2HeaderBytes) {
      swapped = true;
      sizeof_hdr = flipped;
    }
  }
  if (sizeof_hdr != kNifti1HeaderBytes && sizeof_hdr != kNifti2HeaderBytes) {
    TORCH_CHECK(!(bytes[0] == 0x1f && bytes[1] == 0x8b), where(path),
                "the file is gzip-compressed but named .nii: rename it to .nii.gz");
    TORCH_CHECK(false, where(path), "not a NIfTI file: its first 4 bytes (sizeof_hdr) read ", sizeof_hdr,
                ", not 348 (NIfTI-1) or 540 (NIfTI-2), in either byte order");
  }
  TORCH_CHECK(have >= sizeof_hdr, where(path), "truncated: the NIfTI-", sizeof_hdr == kNifti1HeaderBytes ? 1 : 2,
              " header needs ", sizeof_hdr, " bytes, the file has ", have, " bytes", gz ? " after decompression" : "");

  const int version = sizeof_hdr == kNifti1HeaderBytes ? 1 : 2;
  const char* magic = nullptr;
  size_t magic_size = 0;
  int64_t dims[8] = {};
  int datatype = 0;
  double vox_offset = 0;
  nifti_1_header h1;
  nifti_2_header h2;
  if (version == 1) {
    std::memcpy(&h1, bytes, sizeof(h1));
    if (swapped) nifti_swap_as_nifti1(&h1);
    magic = h1.magic;
    magic_size = sizeof(h1.magic);
    for (int i = 0; i < 8; ++i) dims[i] = h1.dim[i];
    datatype = h1.datatype;
    vox_offset = h1.vox_offset;
  } else {
    std::memcpy(&h2, bytes, sizeof(h2));
    if (swapped) nifti_swap_as_nifti2(&h2);
    magic = h2.magic;
    magic_size = sizeof(h2.magic);
    for (int i = 0; i < 8; ++i) dims[i] = h2.dim[i];
    datatype = h2.datatype;
    vox_offset = static_cast<double>(h2.vox_offset);
  }
  const std::string single = version == 1 ? "n+1" : "n+2";
  const std::string pair = version == 1 ? "ni1" : "ni2";
  const std::string found(magic, 3);
  TORCH_CHECK(found != pair || magic[3] != '\0', where(path), "its magic '", pair,
              "' says the voxels are in a separate .img file (a .hdr/.img pair); only single-file .nii is "
              "read: make one with nifti_tool -copy_im -prefix out.nii -infiles in.hdr (Debian's nifti-bin)");
  TORCH_CHECK(found == single && magic[3] == '\0', where(path), "wrong magic '", printable_magic(magic, magic_size),
              "': a single-file NIfTI-", version, " header has '", single,
              "\\0' (ANALYZE 7.5 files, which have none, are not read)");

  TORCH_CHECK(dims[0] >= 1 && dims[0] <= 7, where(path), "dim[0] (the number of dims) is ", dims[0],
              "; NIfTI allows 1 to 7");
  int64_t voxels = 1;
  for (int64_t i = 1; i <= dims[0]; ++i) {
    TORCH_CHECK(dims[i] >= 1, where(path), "dim[", i, "] is ", dims[i], "; sizes must be at least 1");
    TORCH_CHECK(voxels <= std::numeric_limits<int64_t>::max() / 16 / dims[i], where(path),
                "its dims describe more voxels than memory can hold");
    voxels *= dims[i];
  }

  TORCH_CHECK(nifti_is_valid_datatype(datatype), where(path), "unknown datatype code ", datatype,
              " (NIfTI's codes: 2 uint8, 4 int16, 8 int32, 16 float32, 64 float64, 256 int8, 512 uint16, ...)");
  TORCH_CHECK(buffer_dtype(datatype).has_value(), where(path), "datatype ", datatype_name(datatype),
              " is not supported; supported are: ", kSupported);
  int bytes_per_voxel = 0, swap_size = 0;
  nifti_datatype_sizes(datatype, &bytes_per_voxel, &swap_size);
  const int64_t volume_bytes = voxels * bytes_per_voxel;
  TORCH_CHECK(volume_bytes <= options.max_bytes, where(path), "its header declares ", voxels, " voxels of ",
              datatype_name(datatype), ", ", volume_bytes, " bytes, more than NiftiReadOptions::max_bytes (",
              options.max_bytes, "); raise it to read a volume this large");

  // nifticlib reads the extensions between the header and vox_offset into memory before the
  // voxels: bounded here, and within the file when its size is known.
  TORCH_CHECK(std::isfinite(vox_offset) && vox_offset >= 0, where(path), "vox_offset ", vox_offset,
              " is not a byte offset");
  TORCH_CHECK(vox_offset <= static_cast<double>(sizeof_hdr + kMaxExtensionBytes), where(path), "vox_offset ",
              vox_offset, " puts the voxels more than ", kMaxExtensionBytes >> 20,
              " MiB after the header; extensions that large are not read");
  if (!gz) {
    const auto size = static_cast<double>(fs::file_size(path));
    TORCH_CHECK(vox_offset <= size, where(path), "truncated: vox_offset ", vox_offset,
                " (where the voxels start) lies beyond the end of the file, ", size, " bytes");
  }
  return version;
}

NiftiMatrix to_matrix(const nifti_dmat44& m) {
  NiftiMatrix out{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) out[r][c] = m.m[r][c];
  return out;
}

// zlib's own account of a gzip stream's state, for messages.
std::string gzip_status(znzFile in) {
  int code = Z_OK;
  const char* message = in && in->zfptr ? gzerror(in->zfptr, &code) : nullptr;
  return code == Z_OK || !message ? std::string("zlib reports no error") : std::string("zlib: ") + message;
}

// gzread checks the gzip trailer (CRC-32 and length) only when reading past the last byte: read
// on, so that damage that still inflated to the right number of bytes, or a file cut inside its
// trailer, is caught rather than returned as voxels.
void check_gzip_end(znzFile in, const std::string& path) {
  char rest[4096];
  for (;;) {
    const size_t got = znzread(rest, 1, sizeof(rest), in);
    TORCH_CHECK(got != static_cast<size_t>(-1), where(path), "corrupt gzip data (", gzip_status(in), ")");
    if (got == 0) break;
  }
  int code = Z_OK;
  gzerror(in->zfptr, &code);
  TORCH_CHECK(code == Z_OK, where(path), "truncated gzip data: the stream ends before its checksum (",
              gzip_status(in), ")");
}

// Reads the voxels of the image whose header nifticlib read into a tensor, through nifticlib's znz
// stream and nifti_read_buffer, which fails on a short read, swaps bytes and zeroes non-finite
// floats (nifti_image_load does the same into a buffer of its own). A plain file's size is checked
// before its buffer is allocated; a gzip'd file's length is known only once read, so its buffer
// grows with the voxels read (to twice what arrived at most), and a header that promises more than
// the file holds costs no more than what it holds.
torch::Tensor read_voxels(const std::string& path, bool gz, nifti_image& image, torch::Dtype dtype) {
  const int64_t ndim = image.ndim;
  std::vector<int64_t> file_order(ndim);  // slowest first: {..., nz, ny, nx}
  std::vector<int64_t> nifti_order(ndim);
  for (int64_t d = 0; d < ndim; ++d) {
    file_order[ndim - 1 - d] = image.dim[d + 1];
    nifti_order[d] = ndim - 1 - d;
  }
  const int64_t bytes = nifti_get_volsize(&image);
  const int64_t offset = image.iname_offset;
  TORCH_CHECK(c10::multiply_integers(file_order) * static_cast<int64_t>(c10::elementSize(dtype)) == bytes,
              where(path), "nifticlib's voxel size disagrees with the datatype");
  if (!gz) {
    const auto size = static_cast<int64_t>(fs::file_size(path));
    TORCH_CHECK(size >= offset + bytes, where(path), "truncated: the header promises ", bytes,
                " bytes of voxels from byte ", offset, ", but the file has ", size, " bytes");
  }
  ZnzCloser in{znzopen(path.c_str(), "rb", gz ? 1 : 0)};
  TORCH_CHECK(!znz_isnull(in.file), where(path), "cannot be opened");
  const bool placed = znzseek(in.file, offset, SEEK_SET) >= 0;
  int64_t capacity = gz ? std::min(bytes, kFirstVoxelBytes) : bytes;
  std::unique_ptr<void, decltype(&std::free)> buffer(std::malloc(static_cast<size_t>(capacity)), std::free);
  TORCH_CHECK(buffer, where(path), "out of memory for ", capacity, " bytes of voxels");
  int64_t read = 0;
  while (placed && read < bytes) {
    if (read == capacity) {
      capacity = std::min(bytes, 2 * capacity);
      void* grown = std::realloc(buffer.get(), static_cast<size_t>(capacity));
      TORCH_CHECK(grown != nullptr, where(path), "out of memory for ", capacity, " bytes of voxels");
      buffer.release();
      buffer.reset(grown);
    }
    // Whole voxels: capacities are the volume's size or multiples of 1 MiB.
    const int64_t chunk = capacity - read;
    if (nifti_read_buffer(in.file, static_cast<char*>(buffer.get()) + read, chunk, &image) != chunk) break;
    read += chunk;
  }
  TORCH_CHECK(read == bytes, where(path), gz ? "truncated or corrupt gzip data: " : "", "reading the ", bytes,
              " bytes of voxels the header promises from byte ", offset, " failed after ", read, " bytes",
              gz ? " (" + gzip_status(in.file) + ")" : "");
  if (gz) check_gzip_end(in.file, path);
  auto voxels = at::from_blob(buffer.get(), file_order, std::free, at::TensorOptions().dtype(dtype));
  buffer.release();  // now the tensor's
  return voxels.permute(nifti_order);
}

// Creates path by writing under a temporary name in its folder and renaming it over path;
// removes the temporary file when anything fails before that.
class TemporaryFile {
 public:
  TemporaryFile(const std::string& path, bool gz) {
    static std::atomic<uint64_t> counter{0};
    const fs::path target(path);
    std::string stem = target.filename().string();
    stem.resize(stem.size() - (gz ? 7 : 4));
    name_ = (target.parent_path() / ("." + stem + ".tmp-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(counter++) + (gz ? ".nii.gz" : ".nii")))
                .string();
  }
  ~TemporaryFile() {
    if (!name_.empty()) {
      std::error_code ignored;
      fs::remove(name_, ignored);
    }
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  const std::string& name() const { return name_; }

  // Flushes the file to disk first, so that a crash never leaves path naming an empty file.
  void publish_as(const std::string& path) {
    const int fd = ::open(name_.c_str(), O_RDONLY);
    const bool synced = fd >= 0 && ::fsync(fd) == 0;
    const int reason = errno;
    if (fd >= 0) ::close(fd);
    TORCH_CHECK(synced, where(path), "flushing '", name_, "' to disk failed: ", std::strerror(reason));
    std::error_code error;
    fs::rename(name_, path, error);
    TORCH_CHECK(!error, where(path), "cannot rename '", name_, "' to it: ", error.message());
    name_.clear();
  }

 private:
  std::string name_;
};

// The checks every write shares; returns the NIfTI datatype for the tensor.
int check_data(const std::string& path, const torch::Tensor& data, const NiftiWriteOptions& options) {
  TORCH_CHECK_VALUE(data.defined(), "write_nifti('", path, "'): data is an undefined tensor");
  TORCH_CHECK_VALUE(data.dim() >= 1 && data.dim() <= 7, "write_nifti('", path, "'): data has ", data.dim(),
                    " dims; NIfTI holds 1 to 7");
  for (int64_t d = 0; d < data.dim(); ++d) {
    TORCH_CHECK_VALUE(data.size(d) >= 1, "write_nifti('", path, "'): data's shape ", shape_string(data.sizes()),
                      " has an empty dim; NIfTI sizes are at least 1");
    TORCH_CHECK_VALUE(data.size(d) <= kNifti1MaxDim, "write_nifti('", path, "'): dim ", d, " of ",
                      shape_string(data.sizes()), " exceeds NIfTI-1's 32767 (nifticlib 3.0.1 cannot write "
                      "single-file NIfTI-2)");
  }
  const int datatype = datatype_for(data.scalar_type());
  TORCH_CHECK_VALUE(datatype != DT_UNKNOWN, "write_nifti('", path, "'): dtype ", data.scalar_type(),
                    " cannot be stored; convert to one of uint8, int8, int16, int32, int64, float32, float64 "
                    "(e.g. .to(torch::kUInt8) for a mask, .to(torch::kFloat32) for half precision)");
  TORCH_CHECK_VALUE(std::isfinite(options.scl_slope) && std::isfinite(options.scl_inter), "write_nifti('", path,
                    "'): scl_slope and scl_inter must be finite");
  return datatype;
}

// Writes data with image's header (dims, datatype and scaling set here) atomically to path.
void write_image(const std::string& path, const torch::Tensor& data, int datatype, nifti_image& image,
                 const NiftiWriteOptions& options) {
  const bool gz = is_gzip_name(path, "write_nifti");
  TORCH_CHECK(!gz || nifti_compiled_with_zlib(), where(path), "this nifticlib was built without zlib: no .nii.gz");
  const int64_t ndim = data.dim();
  image.dim[0] = ndim;
  for (int64_t d = 1; d <= 7; ++d) image.dim[d] = d <= ndim ? data.size(d - 1) : 1;
  TORCH_CHECK(nifti_update_dims_from_array(&image) == 0, where(path), "nifticlib refused the dims ",
              shape_string(data.sizes()));
  // nifticlib drops trailing dims of size 1 from dim[0]; keep them, so the shape reads back as written.
  image.dim[0] = image.ndim = ndim;
  image.datatype = datatype;
  nifti_datatype_sizes(datatype, &image.nbyper, &image.swapsize);
  image.scl_slope = options.scl_slope;
  image.scl_inter = options.scl_inter;
  image.nifti_type = NIFTI_FTYPE_NIFTI1_1;

  const fs::path folder = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  TORCH_CHECK(fs::is_directory(folder), where(path), "the folder '", folder.string(), "' does not exist");

  // x fastest in memory, as NIfTI stores it: the reverse of the NIfTI-order dims, row-major.
  std::vector<int64_t> reverse(ndim);
  for (int64_t d = 0; d < ndim; ++d) reverse[d] = ndim - 1 - d;
  const torch::Tensor voxels = data.detach().to(torch::kCPU).permute(reverse).contiguous();
  const int64_t bytes = voxels.numel() * static_cast<int64_t>(voxels.element_size());

  TemporaryFile temporary(path, gz);
  TORCH_CHECK(nifti_set_filenames(&image, temporary.name().c_str(), 0, 1) == 0, where(path),
              "nifticlib refused the file name '", temporary.name(), "'");
  // Header and extensions by nifticlib, file left open (option 2) so that the voxel write and the
  // close, where gzip flushes, can be checked: nifti_image_write reports neither.
  znzFile out = nifti_image_write_hdr_img2(&image, 2, "wb", nullptr, nullptr);
  TORCH_CHECK(!znz_isnull(out), where(path), "cannot write the header to '", temporary.name(),
              "' (is the folder writable?)");
  const int64_t written = nifti_write_buffer(out, voxels.data_ptr(), bytes);
  const int closed = znzclose(out);
  TORCH_CHECK(written == bytes && closed == 0, where(path), "writing '", temporary.name(), "' failed after ",
              std::max<int64_t>(written, 0), " of ", bytes, " voxel bytes (disk full?)");
  temporary.publish_as(path);
}

}  // namespace

torch::Tensor NiftiVolume::affine() const {
  const NiftiMatrix& m = sform_code > 0 ? sform : qform;
  auto out = torch::empty({4, 4}, torch::kFloat64);
  auto a = out.accessor<double, 2>();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) a[r][c] = m[r][c];
  return out;
}

NiftiVolume read_nifti(const std::string& path, const NiftiReadOptions& options) {
  quiet_nifticlib();
  TORCH_CHECK_VALUE(options.scaled_dtype == torch::kFloat32 || options.scaled_dtype == torch::kFloat64,
                    "read_nifti('", path, "'): scaled_dtype must be kFloat32 or kFloat64, not ",
                    options.scaled_dtype);
  const bool gz = is_gzip_name(path, "read_nifti");
  TORCH_CHECK(!gz || nifti_compiled_with_zlib(), where(path), "this nifticlib was built without zlib: no .nii.gz");
  check_readable(path);
  TORCH_CHECK_VALUE(options.max_bytes > 0, "read_nifti('", path, "'): max_bytes must be positive");
  const int version = check_header(path, gz, options);

  ImagePtr image(nifti_image_read(path.c_str(), 0));
  TORCH_CHECK(image, where(path), "nifticlib could not read the header (its reason, if any, is on stderr)");

  NiftiVolume volume;
  volume.path = path;
  volume.nifti_version = version;
  volume.datatype = image->datatype;
  volume.data = read_voxels(path, gz, *image, *buffer_dtype(image->datatype));
  // Widened with the bits kept: the signed read of 65535 is -1, masked back to 65535.
  if (image->datatype == DT_UINT16) volume.data = volume.data.to(torch::kInt32).bitwise_and_(0xFFFF);
  if (image->datatype == DT_UINT32)
    volume.data = volume.data.to(torch::kInt64).bitwise_and_(static_cast<int64_t>(0xFFFFFFFF));

  volume.scl_slope = image->scl_slope;
  volume.scl_inter = image->scl_inter;
  const bool scales = volume.scl_slope != 0.0 && !(volume.scl_slope == 1.0 && volume.scl_inter == 0.0);
  if (scales && options.apply_scaling) {
    const bool wide = image->datatype == DT_FLOAT64 || options.scaled_dtype == torch::kFloat64;
    volume.data =
        volume.data.to(wide ? torch::kFloat64 : torch::kFloat32).mul_(volume.scl_slope).add_(volume.scl_inter);
    volume.scaled = true;
  }

  for (int64_t d = 1; d <= image->ndim; ++d) volume.spacing.push_back(image->pixdim[d]);
  volume.xyz_units = image->xyz_units;
  volume.time_units = image->time_units;
  volume.qform_code = image->qform_code;
  volume.sform_code = image->sform_code;
  volume.qform = to_matrix(image->qto_xyz);
  volume.sform = to_matrix(image->sto_xyz);
  volume.description.assign(image->descrip, strnlen(image->descrip, sizeof(image->descrip)));
  for (int i = 0; i < image->num_ext; ++i) {
    const nifti1_extension& extension = image->ext_list[i];
    // esize counts the 8 bytes of esize and ecode themselves.
    const int size = std::max(extension.esize - 8, 0);
    volume.extensions.push_back({extension.ecode, std::string(extension.edata, extension.edata ? size : 0)});
  }
  volume.header = std::make_shared<const detail::NiftiHeader>(image.release());
  return volume;
}

void write_nifti(const std::string& path, const torch::Tensor& data, const NiftiVolume& like,
                 const NiftiWriteOptions& options) {
  quiet_nifticlib();
  TORCH_CHECK_VALUE(like.header && like.header->image, "write_nifti('", path,
                    "'): `like` has no NIfTI header: pass a volume from read_nifti, or give voxel sizes "
                    "instead (write_nifti(path, data, spacing)) for a volume with no grid to copy");
  const int datatype = check_data(path, data, options);
  const nifti_image& grid = *like.header->image;
  const int64_t spatial = std::min<int64_t>(grid.ndim, 3);
  bool same = data.dim() >= spatial;
  for (int64_t d = 0; same && d < spatial; ++d) same = data.size(d) == grid.dim[d + 1];
  if (!same) {
    std::vector<int64_t> like_dims(grid.dim + 1, grid.dim + 1 + grid.ndim);
    TORCH_CHECK_VALUE(false, "write_nifti('", path, "'): data's shape ", shape_string(data.sizes()),
                      " does not fit the grid of '", like.path, "', ", shape_string(like_dims), ": its first ",
                      spatial, " dims (NIfTI order x, y, z) must be equal");
  }

  ImagePtr image(nifti_copy_nim_info(&grid));
  TORCH_CHECK(image, where(path), "nifticlib could not copy the header of '", like.path, "'");
  // Dims the grid does not have (e.g. channels beyond x, y, z) get unit spacing.
  for (int64_t d = grid.ndim + 1; d <= 7; ++d) image->pixdim[d] = 1.0;
  nifti_free_extensions(image.get());
  image->cal_min = image->cal_max = 0.0;
  image->intent_code = 0;
  image->intent_p1 = image->intent_p2 = image->intent_p3 = 0.0;
  std::memset(image->intent_name, 0, sizeof(image->intent_name));
  std::memset(image->descrip, 0, sizeof(image->descrip));
  std::memset(image->aux_file, 0, sizeof(image->aux_file));
  write_image(path, data, datatype, *image, options);
}

void write_nifti(const std::string& path, const torch::Tensor& data, const std::vector<double>& spacing,
                 const NiftiWriteOptions& options) {
  quiet_nifticlib();
  const int datatype = check_data(path, data, options);
  const auto spatial = static_cast<size_t>(std::min<int64_t>(data.dim(), 3));
  TORCH_CHECK_VALUE(spacing.size() == spatial, "write_nifti('", path, "'): ", spacing.size(),
                    " voxel sizes for data of shape ", shape_string(data.sizes()), "; give one per spatial dim (",
                    spatial, ")");
  for (double size : spacing)
    TORCH_CHECK_VALUE(std::isfinite(size) && size > 0.0, "write_nifti('", path, "'): voxel size ", size,
                      " is not a positive number");
  int64_t dims[8] = {data.dim(), 1, 1, 1, 1, 1, 1, 1};
  for (int64_t d = 0; d < data.dim(); ++d) dims[d + 1] = data.size(d);
  ImagePtr image(nifti_make_new_nim(dims, datatype, 0));
  TORCH_CHECK(image, where(path), "nifticlib could not make a header for shape ", shape_string(data.sizes()));
  for (int64_t d = 1; d <= 7; ++d) image->pixdim[d] = static_cast<size_t>(d) <= spatial ? spacing[d - 1] : 1.0;
  image->xyz_units = NIFTI_UNITS_MM;
  image->qform_code = 0;
  image->sform_code = 0;
  write_image(path, data, datatype, *image, options);
}

}  // namespace memcnn::data
