// NIfTI through nifticlib: every volume Debian's mricron-data installs, round trips of each
// dtype with the grid kept, scaling, NIfTI-2, byte-swapped files, extensions, and bad files
// (each a c10::Error naming the file).

#include <memcnn/data/nifti.h>

#include "helpers.h"

#include <gtest/gtest.h>
// nifticlib's header structs and byte-swap functions, to build files memcnn does not write.
#include <nifti2_io.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>

namespace memcnn::data::test {
namespace {
namespace fs = std::filesystem;

static_assert(sizeof(nifti_1_header) == 348 && sizeof(nifti_2_header) == 540, "nifticlib's header layout");

const char* kTemplates = "/usr/share/mricron/templates";

// Runs `call` expecting a c10::Error whose message holds every one of `parts`.
void expect_error(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "expected an error mentioning " << parts.front();
  } catch (const c10::Error& error) {
    const std::string message = error.what_without_backtrace();
    for (const auto& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

// Same dtype, shape and bytes (so -0.0 differs from 0.0, unlike torch::equal).
::testing::AssertionResult same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << a.scalar_type() << " vs " << b.scalar_type();
  if (a.sizes() != b.sizes()) return ::testing::AssertionFailure() << "shape " << a.sizes() << " vs " << b.sizes();
  const auto x = a.contiguous(), y = b.contiguous();
  if (std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) != 0)
    return ::testing::AssertionFailure() << "the bytes differ";
  return ::testing::AssertionSuccess();
}

nifti_1_header header_of(const Bytes& file) {
  nifti_1_header header;
  std::memcpy(&header, file.data(), sizeof(header));
  return header;
}

void put_header(Bytes& file, const nifti_1_header& header) { std::memcpy(file.data(), &header, sizeof(header)); }

// Rewrites the header of an uncompressed .nii in place.
void edit_header(const std::string& path, const std::function<void(nifti_1_header&)>& edit) {
  Bytes file = read_whole_file(path);
  nifti_1_header header = header_of(file);
  edit(header);
  put_header(file, header);
  write_file(path, file);
}

// The voxels of a tensor in NIfTI order as the file stores them (x fastest).
Bytes file_order_bytes(const torch::Tensor& data) {
  std::vector<int64_t> reverse;
  for (int64_t d = data.dim() - 1; d >= 0; --d) reverse.push_back(d);
  const auto flat = data.permute(reverse).contiguous();
  const auto* begin = static_cast<const uint8_t*>(flat.data_ptr());
  return Bytes(begin, begin + flat.numel() * flat.element_size());
}

// A small volume with the orientation scanners write: a rotated qform with qfac -1 (a left-handed
// voxel grid) and a general sform, units, a description, an intent and a display range.
std::string write_oriented(const TempDir& dir) {
  const std::string path = dir / "oriented.nii";
  write_nifti(path, torch::zeros({5, 4, 3}, torch::kUInt8), {0.7, 0.8, 0.9});
  edit_header(path, [](nifti_1_header& h) {
    h.qform_code = NIFTI_XFORM_SCANNER_ANAT;
    h.quatern_b = 0.1f;
    h.quatern_c = -0.2f;
    h.quatern_d = 0.3f;
    h.qoffset_x = 10.5f;
    h.qoffset_y = -20.25f;
    h.qoffset_z = 30.f;
    h.pixdim[0] = -1.f;
    h.sform_code = NIFTI_XFORM_MNI_152;
    const float rows[3][4] = {{0.7f, 0.01f, 0.02f, -90.f}, {-0.03f, 0.8f, 0.04f, -126.f}, {0.05f, -0.06f, 0.9f, -72.f}};
    std::memcpy(h.srow_x, rows[0], sizeof(h.srow_x));
    std::memcpy(h.srow_y, rows[1], sizeof(h.srow_y));
    std::memcpy(h.srow_z, rows[2], sizeof(h.srow_z));
    h.xyzt_units = NIFTI_UNITS_MM | NIFTI_UNITS_SEC;
    std::strcpy(h.descrip, "oriented test volume");
    h.intent_code = NIFTI_INTENT_LABEL;
    h.cal_min = 0.f;
    h.cal_max = 10.f;
  });
  return path;
}

void expect_same_grid(const NiftiVolume& a, const NiftiVolume& b) {
  EXPECT_EQ(a.qform_code, b.qform_code);
  EXPECT_EQ(a.sform_code, b.sform_code);
  EXPECT_EQ(a.qform, b.qform);
  EXPECT_EQ(a.sform, b.sform);
  EXPECT_EQ(a.xyz_units, b.xyz_units);
  const size_t spatial = std::min<size_t>(3, std::min(a.spacing.size(), b.spacing.size()));
  for (size_t d = 0; d < spatial; ++d) EXPECT_EQ(a.spacing[d], b.spacing[d]) << "dim " << d;
}

int64_t distinct_values(const torch::Tensor& labels) {
  return (torch::bincount(labels.flatten().to(torch::kLong)) > 0).sum().item<int64_t>();
}

// ---------------------------------------------------------------- the real volumes

struct Template {
  std::vector<int64_t> shape;
  torch::Dtype dtype;
  double max;
  double sum;        // of every voxel, computed independently (Python's gzip and struct)
  int64_t distinct;  // distinct values (labels), 0 for float volumes
};

const std::map<std::string, Template>& templates() {
  static const std::map<std::string, Template> known{
      {"AICHAmc.nii.gz", {{91, 109, 91}, torch::kUInt8, 192, 12270913, 193}},
      {"HarvardOxford-cort-maxprob-thr0-1mm.nii.gz", {{182, 218, 182}, torch::kUInt8, 48, 32581128, 49}},
      {"JHU-WhiteMatter-labels-1mm.nii.gz", {{182, 218, 182}, torch::kUInt8, 48, 3384687, 49}},
      {"JHU-WhiteMatter-labels-2mm.nii.gz", {{91, 109, 91}, torch::kUInt8, 48, 420763, 49}},
      {"aal.nii.gz", {{181, 217, 181}, torch::kUInt8, 116, 76656511, 117}},
      {"brodmann.nii.gz", {{181, 217, 181}, torch::kUInt8, 48, 33673306, 42}},
      {"ch2.nii.gz", {{181, 217, 181}, torch::kUInt8, 254, 317151210, 249}},
      {"ch2bet.nii.gz", {{181, 217, 181}, torch::kUInt8, 133, 158526435, 127}},
      {"ch2better.nii.gz", {{301, 370, 316}, torch::kUInt8, 130, 1222013263, 81}},
      {"inia19-NeuroMaps.nii.gz", {{168, 206, 128}, torch::kInt16, 1605, 502525881, 725}},
      {"inia19-t1-brain.nii.gz", {{168, 206, 128}, torch::kFloat32, 383.175537109375, 75356682.64319038, 0}},
      {"jhu189.nii.gz", {{157, 189, 136}, torch::kUInt8, 189, 106507886, 190}},
      {"natbrainlab.nii.gz", {{157, 189, 136}, torch::kUInt8, 116, 23517800, 33}},
  };
  return known;
}

std::string template_path(const std::string& name) { return std::string(kTemplates) + "/" + name; }

TEST(Nifti, ReadsEveryMricronTemplate) {
  ASSERT_TRUE(fs::is_directory(kTemplates))
      << kTemplates << " is missing: install Debian's mricron-data (scripts/install-deps.sh does)";
  int64_t read = 0;
  for (const auto& entry : fs::directory_iterator(kTemplates)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 7 || name.compare(name.size() - 7, 7, ".nii.gz") != 0) continue;
    SCOPED_TRACE(name);
    const NiftiVolume volume = read_nifti(entry.path().string());
    ++read;
    EXPECT_EQ(volume.nifti_version, 1);
    EXPECT_EQ(volume.data.dim(), 3);
    EXPECT_EQ(volume.spacing.size(), 3u);
    EXPECT_FALSE(volume.scaled);  // every template has slope 1, intercept 0
    EXPECT_EQ(volume.data.stride(0), 1);  // the file's layout, no copy
    const auto known = templates().find(name);
    ASSERT_NE(known, templates().end()) << "a template this test does not know: add its figures";
    const Template& t = known->second;
    EXPECT_EQ(volume.data.sizes(), at::IntArrayRef(t.shape));
    EXPECT_EQ(volume.data.scalar_type(), t.dtype);
    EXPECT_EQ(volume.data.max().item<double>(), t.max);
    EXPECT_EQ(volume.data.min().item<double>(), 0.0);
    if (t.distinct > 0) {
      EXPECT_EQ(volume.data.sum(torch::kLong).item<int64_t>(), static_cast<int64_t>(t.sum));
      EXPECT_EQ(distinct_values(volume.data), t.distinct);
    } else {
      EXPECT_NEAR(volume.data.sum(torch::kFloat64).item<double>(), t.sum, 1e-9 * t.sum);
    }
  }
  EXPECT_EQ(read, static_cast<int64_t>(templates().size()));
}

TEST(Nifti, Colin27HeadOnTheMniGrid) {
  const NiftiVolume ch2 = read_nifti(template_path("ch2.nii.gz"));
  EXPECT_EQ(ch2.datatype, DT_UINT8);
  EXPECT_EQ(ch2.sform_code, NIFTI_XFORM_MNI_152);
  EXPECT_EQ(ch2.qform_code, 0);
  EXPECT_EQ(ch2.spacing, (std::vector<double>{1, 1, 1}));
  const NiftiMatrix mni{{{1, 0, 0, -90}, {0, 1, 0, -125}, {0, 0, 1, -71}, {0, 0, 0, 1}}};
  EXPECT_EQ(ch2.sform, mni);
  EXPECT_TRUE(torch::equal(ch2.affine(), torch::tensor({1., 0., 0., -90., 0., 1., 0., -125., 0., 0., 1., -71., 0., 0.,
                                                        0., 1.}).view({4, 4})));
  EXPECT_EQ(ch2.description, "spm - algebra");
  // Voxel order: data[i][j][k] is byte i + nx*(j + ny*k) of the voxels (values from Python).
  EXPECT_EQ(ch2.data[90][108][90].item<int>(), 33);
  EXPECT_EQ(ch2.data[120][40][60].item<int>(), 115);
  EXPECT_EQ(ch2.data[10][150][100].item<int>(), 0);

  // The atlases share the head's grid, so a label volume lines up voxel for voxel.
  const NiftiVolume aal = read_nifti(template_path("aal.nii.gz"));
  expect_same_grid(aal, ch2);
  EXPECT_EQ(aal.data.max().item<int>(), 116);  // AAL's 116 regions
  EXPECT_EQ(aal.data[60][120][70].item<int>(), 73);
  EXPECT_EQ(aal.data[100][80][50].item<int>(), 96);
  expect_same_grid(read_nifti(template_path("ch2bet.nii.gz")), ch2);
}

TEST(Nifti, MacaqueLabelsAfterTheirLabelTable) {
  // inia19-NeuroMaps stores its label names (MRIcron's convention) between the header and the
  // voxels, which start at vox_offset 32976; its extender flag is 0, so it has no NIfTI extension.
  const NiftiVolume labels = read_nifti(template_path("inia19-NeuroMaps.nii.gz"));
  EXPECT_EQ(labels.datatype, DT_INT16);
  EXPECT_EQ(labels.data.scalar_type(), torch::kInt16);
  EXPECT_TRUE(labels.extensions.empty());
  EXPECT_EQ(labels.data[84][103][64].item<int>(), 1497);
  EXPECT_EQ(labels.data[60][120][70].item<int>(), 98);
  EXPECT_EQ(labels.data[100][80][50].item<int>(), 1069);
  EXPECT_EQ(labels.qform_code, NIFTI_XFORM_SCANNER_ANAT);
  EXPECT_EQ(labels.sform_code, NIFTI_XFORM_SCANNER_ANAT);
  EXPECT_EQ(labels.spacing, (std::vector<double>{0.5, 0.5, 0.5}));
  EXPECT_EQ(labels.sform[0][3], -42.0);
  EXPECT_EQ(labels.sform[1][3], -57.5);
  EXPECT_EQ(labels.sform[2][3], -30.0);
  EXPECT_EQ(labels.description.rfind("https://www.nitrc.org/projects/inia19/", 0), 0u);

  // The T1 it labels: the same grid, given by its sform alone (qform_code 0).
  const NiftiVolume t1 = read_nifti(template_path("inia19-t1-brain.nii.gz"));
  EXPECT_EQ(t1.data.scalar_type(), torch::kFloat32);
  EXPECT_EQ(t1.data[84][103][64].item<float>(), 88.77368927001953f);
  EXPECT_EQ(t1.data[60][120][70].item<float>(), 92.62740325927734f);
  EXPECT_EQ(t1.qform_code, 0);
  EXPECT_EQ(t1.sform_code, labels.sform_code);
  EXPECT_EQ(t1.sform, labels.sform);
  EXPECT_EQ(t1.spacing, labels.spacing);
  EXPECT_TRUE(torch::equal(t1.affine(), labels.affine()));
}

TEST(Nifti, PredictionOnTheGridOfItsInput) {
  TempDir dir;
  const NiftiVolume ch2 = read_nifti(template_path("ch2.nii.gz"));
  const torch::Tensor mask = (ch2.data > 100).to(torch::kUInt8);
  const std::string path = dir / "brain-mask.nii.gz";
  write_nifti(path, mask, ch2);
  const NiftiVolume back = read_nifti(path);
  EXPECT_TRUE(same_bits(back.data, mask));
  expect_same_grid(back, ch2);
  EXPECT_EQ(back.description, "");  // "spm - algebra" described ch2's voxels, not the mask's
  EXPECT_EQ(list_tree(dir.path()), std::vector<std::string>{"brain-mask.nii.gz"});  // no temporary left
}

// ---------------------------------------------------------------- round trips

torch::Tensor sample(torch::Dtype dtype, at::IntArrayRef shape) {
  switch (dtype) {
    case torch::kUInt8: return torch::randint(0, 256, shape, torch::kUInt8);
    case torch::kInt8: return torch::randint(-128, 128, shape, torch::kInt8);
    case torch::kInt16: return torch::randint(-32768, 32768, shape, torch::kInt16);
    case torch::kInt32:
      return torch::randint(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), shape,
                            torch::kInt32);
    case torch::kInt64: return torch::randint(-(int64_t{1} << 62), int64_t{1} << 62, shape, torch::kInt64);
    default: {
      auto values = (torch::randn(shape, torch::kFloat64) * 1e3).to(dtype);
      // Edge values: signed zero, subnormal, the largest finite.
      auto flat = values.view({-1});
      flat[0] = -0.0;
      flat[1] = dtype == torch::kFloat32 ? 1e-40 : 1e-310;
      flat[2] = dtype == torch::kFloat32 ? std::numeric_limits<float>::max() : std::numeric_limits<double>::max();
      return values;
    }
  }
}

TEST(Nifti, RoundTripEveryDtypeBitForBitWithTheGridKept) {
  TempDir dir;
  torch::manual_seed(0);
  const NiftiVolume like = read_nifti(write_oriented(dir));
  // The oriented header as nifticlib reads it: a rotation with a reflection, and the sform.
  EXPECT_EQ(like.qform_code, NIFTI_XFORM_SCANNER_ANAT);
  EXPECT_EQ(like.sform_code, NIFTI_XFORM_MNI_152);
  EXPECT_NE(like.qform[0][1], 0.0);
  const auto rotation = torch::tensor({like.qform[0][0], like.qform[0][1], like.qform[0][2], like.qform[1][0],
                                       like.qform[1][1], like.qform[1][2], like.qform[2][0], like.qform[2][1],
                                       like.qform[2][2]}).view({3, 3});
  EXPECT_LT(torch::det(rotation).item<double>(), 0.0);  // qfac -1
  EXPECT_EQ(like.qform[0][3], 10.5);
  EXPECT_EQ(like.sform[1][0], static_cast<double>(-0.03f));
  EXPECT_EQ(like.spacing, (std::vector<double>{static_cast<double>(0.7f), static_cast<double>(0.8f),
                                               static_cast<double>(0.9f)}));
  EXPECT_EQ(like.description, "oriented test volume");
  EXPECT_TRUE(torch::equal(like.affine()[1][0], torch::tensor(static_cast<double>(-0.03f), torch::kFloat64)));

  const std::vector<std::pair<torch::Dtype, int>> dtypes{
      {torch::kUInt8, DT_UINT8}, {torch::kInt8, DT_INT8},         {torch::kInt16, DT_INT16},
      {torch::kInt32, DT_INT32}, {torch::kInt64, DT_INT64},       {torch::kFloat32, DT_FLOAT32},
      {torch::kFloat64, DT_FLOAT64}};
  for (const auto& [dtype, code] : dtypes) {
    for (const std::string extension : {".nii", ".nii.gz"}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + extension);
      const torch::Tensor data = sample(dtype, {5, 4, 3});
      const std::string path = dir / (std::string("volume-") + c10::toString(dtype) + extension);
      write_nifti(path, data, like);
      const Bytes file = read_whole_file(path);
      if (extension == ".nii.gz") {
        EXPECT_TRUE(file[0] == 0x1f && file[1] == 0x8b);
      } else {
        EXPECT_EQ(header_of(file).sizeof_hdr, 348);
        EXPECT_EQ(file.size(), 352u + data.numel() * data.element_size());
      }
      const NiftiVolume back = read_nifti(path);
      EXPECT_TRUE(same_bits(back.data, data));
      EXPECT_EQ(back.datatype, code);
      EXPECT_FALSE(back.scaled);
      EXPECT_EQ(back.scl_slope, 1.0);
      EXPECT_EQ(back.scl_inter, 0.0);
      expect_same_grid(back, like);
      EXPECT_EQ(back.time_units, like.time_units);
      EXPECT_EQ(back.description, "");
    }
  }
}

TEST(Nifti, WriteTakesAnyLayoutAndExtraDims) {
  TempDir dir;
  const NiftiVolume like = read_nifti(write_oriented(dir));
  // A channels-last prediction, non-contiguous and requiring grad.
  const torch::Tensor probabilities = torch::rand({2, 5, 4, 3}).permute({1, 2, 3, 0}).requires_grad_();
  write_nifti(dir / "probabilities.nii.gz", probabilities, like);
  const NiftiVolume back = read_nifti(dir / "probabilities.nii.gz");
  EXPECT_TRUE(same_bits(back.data, probabilities.detach()));
  expect_same_grid(back, like);
  EXPECT_EQ(back.spacing.size(), 4u);
  EXPECT_EQ(back.spacing[3], 1.0);

  // A trailing dim of size 1 is kept (nifticlib alone would drop it from dim[0]).
  write_nifti(dir / "one.nii", torch::ones({5, 4, 3, 1}, torch::kInt16), like);
  EXPECT_EQ(read_nifti(dir / "one.nii").data.sizes(), (std::vector<int64_t>{5, 4, 3, 1}));

  // Overwriting replaces the file whole.
  write_nifti(dir / "one.nii", torch::full({5, 4, 3}, 7, torch::kInt16), like);
  EXPECT_TRUE(same_bits(read_nifti(dir / "one.nii").data, torch::full({5, 4, 3}, 7, torch::kInt16)));
  for (const auto& name : list_tree(dir.path())) EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name;
}

TEST(Nifti, FreshVolumeHasSpacingAndNoOrientation) {
  TempDir dir;
  const torch::Tensor data = torch::arange(24, torch::kFloat32).view({4, 3, 2});
  write_nifti(dir / "fresh.nii.gz", data, {1.5, 2.0, 2.5});
  const NiftiVolume back = read_nifti(dir / "fresh.nii.gz");
  EXPECT_TRUE(same_bits(back.data, data));
  EXPECT_EQ(back.qform_code, 0);
  EXPECT_EQ(back.sform_code, 0);
  EXPECT_EQ(back.spacing, (std::vector<double>{1.5, 2.0, 2.5}));
  EXPECT_EQ(back.xyz_units, NIFTI_UNITS_MM);
  EXPECT_TRUE(torch::equal(back.affine(), torch::diag(torch::tensor({1.5, 2.0, 2.5, 1.0}, torch::kFloat64))));
  // Voxel (i, j, k) is at byte i + nx*(j + ny*k): x fastest on disk.
  EXPECT_EQ(back.data[3][0][0].item<float>(), data[3][0][0].item<float>());

  write_nifti(dir / "series.nii", torch::zeros({4, 3, 2, 5}, torch::kUInt8), {1.0, 1.0, 1.0});
  EXPECT_EQ(read_nifti(dir / "series.nii").spacing, (std::vector<double>{1, 1, 1, 1}));
}

TEST(Nifti, ScalingSlopeAndIntercept) {
  TempDir dir;
  const torch::Tensor stored = torch::arange(-30, 30, torch::kInt16).view({5, 4, 3});
  write_nifti(dir / "scaled.nii.gz", stored, {1.0, 1.0, 1.0}, {2.0, 1.0});

  const NiftiVolume scaled = read_nifti(dir / "scaled.nii.gz");
  EXPECT_TRUE(scaled.scaled);
  EXPECT_EQ(scaled.scl_slope, 2.0);
  EXPECT_EQ(scaled.scl_inter, 1.0);
  EXPECT_EQ(scaled.datatype, DT_INT16);
  EXPECT_TRUE(same_bits(scaled.data, stored.to(torch::kFloat32) * 2 + 1));

  NiftiReadOptions raw;
  raw.apply_scaling = false;
  const NiftiVolume unscaled = read_nifti(dir / "scaled.nii.gz", raw);
  EXPECT_FALSE(unscaled.scaled);
  EXPECT_TRUE(same_bits(unscaled.data, stored));
  EXPECT_EQ(unscaled.scl_slope, 2.0);

  NiftiReadOptions wide;
  wide.scaled_dtype = torch::kFloat64;
  EXPECT_TRUE(same_bits(read_nifti(dir / "scaled.nii.gz", wide).data, stored.to(torch::kFloat64) * 2 + 1));

  // Rewriting the stored values with the header's scaling reproduces the file's meaning.
  write_nifti(dir / "again.nii", unscaled.data, unscaled, {unscaled.scl_slope, unscaled.scl_inter});
  EXPECT_TRUE(same_bits(read_nifti(dir / "again.nii").data, scaled.data));

  // (1, 0) is no scaling: the dtype stays.
  write_nifti(dir / "identity.nii", stored, {1.0, 1.0, 1.0}, {1.0, 0.0});
  const NiftiVolume identity = read_nifti(dir / "identity.nii");
  EXPECT_FALSE(identity.scaled);
  EXPECT_TRUE(same_bits(identity.data, stored));

  // A slope of 0 is NIfTI's "no scaling", whatever the intercept; nifticlib reads a NaN slope as 0.
  for (const float slope : {0.0f, NAN}) {
    edit_header(dir / "identity.nii", [slope](nifti_1_header& h) {
      h.scl_slope = slope;
      h.scl_inter = 5.f;
    });
    const NiftiVolume unscaled_again = read_nifti(dir / "identity.nii");
    EXPECT_FALSE(unscaled_again.scaled);
    EXPECT_TRUE(same_bits(unscaled_again.data, stored));
  }

  // A float64 volume is scaled in float64 whatever scaled_dtype says.
  const torch::Tensor doubles = torch::rand({5, 4, 3}, torch::kFloat64);
  write_nifti(dir / "doubles.nii", doubles, {1.0, 1.0, 1.0}, {0.5, -3.0});
  EXPECT_TRUE(same_bits(read_nifti(dir / "doubles.nii").data, doubles * 0.5 - 3.0));

  expect_error([&] { write_nifti(dir / "bad.nii", stored, {1.0, 1.0, 1.0}, {NAN, 0.0}); }, {"bad.nii", "finite"});
  NiftiReadOptions integer;
  integer.scaled_dtype = torch::kInt32;
  expect_error([&] { read_nifti(dir / "scaled.nii.gz", integer); }, {"scaled.nii.gz", "scaled_dtype"});
}

TEST(Nifti, NonFiniteFloatsReadAsZero) {
  // nifticlib's rule, documented in read_nifti: NaN and infinities become 0 as it reads.
  TempDir dir;
  const torch::Tensor data = torch::tensor({1.0f, NAN, INFINITY, -INFINITY, -2.0f});
  write_nifti(dir / "nan.nii", data, {1.0});
  EXPECT_TRUE(same_bits(read_nifti(dir / "nan.nii").data, torch::tensor({1.0f, 0.0f, 0.0f, 0.0f, -2.0f})));
}

TEST(Nifti, UnsignedSixteenAndThirtyTwoBitAreWidened) {
  TempDir dir;
  const torch::Tensor shorts = torch::tensor({0, 1, -1, 32767, -32768}, torch::kInt16);
  write_nifti(dir / "u16.nii", shorts, {1.0});
  edit_header(dir / "u16.nii", [](nifti_1_header& h) { h.datatype = DT_UINT16; });
  const NiftiVolume u16 = read_nifti(dir / "u16.nii");
  EXPECT_EQ(u16.datatype, DT_UINT16);
  EXPECT_TRUE(same_bits(u16.data, torch::tensor({0, 1, 65535, 32767, 32768}, torch::kInt32)));

  const torch::Tensor ints = torch::tensor({0, -1, std::numeric_limits<int32_t>::min()}, torch::kInt32);
  write_nifti(dir / "u32.nii", ints, {1.0});
  edit_header(dir / "u32.nii", [](nifti_1_header& h) { h.datatype = DT_UINT32; });
  write_file(dir / "u32.nii.gz", gzip(read_whole_file(dir / "u32.nii")));
  const NiftiVolume u32 = read_nifti(dir / "u32.nii.gz");
  EXPECT_TRUE(
      same_bits(u32.data, torch::tensor({int64_t{0}, int64_t{4294967295}, int64_t{2147483648}}, torch::kInt64)));
}

TEST(Nifti, ReadsBigEndianFiles) {
  TempDir dir;
  const NiftiVolume like = read_nifti(write_oriented(dir));
  const torch::Tensor data = sample(torch::kFloat32, {5, 4, 3});
  write_nifti(dir / "native.nii", data, like);
  Bytes file = read_whole_file(dir / "native.nii");
  nifti_1_header header = header_of(file);
  nifti_swap_as_nifti1(&header);  // every field to the other byte order
  put_header(file, header);
  nifti_swap_4bytes(data.numel(), file.data() + 352);
  write_file(dir / "swapped.nii.gz", gzip(file));
  const NiftiVolume back = read_nifti(dir / "swapped.nii.gz");
  EXPECT_TRUE(same_bits(back.data, data));
  expect_same_grid(back, like);
}

TEST(Nifti, ReadsNifti2) {
  TempDir dir;
  const std::array<std::array<double, 4>, 3> rows = {
      {{0.5, 0.1, 0.0, -10.123456789}, {0.0, 0.6, 0.2, 20.5}, {0.3, 0.0, 0.7, 1e-9}}};
  const torch::Tensor data = sample(torch::kInt16, {5, 4, 3});
  const Bytes file = nifti2_int16_file({5, 4, 3}, rows, file_order_bytes(data));
  write_file(dir / "two.nii.gz", gzip(file));

  const NiftiVolume back = read_nifti(dir / "two.nii.gz");
  EXPECT_EQ(back.nifti_version, 2);
  EXPECT_TRUE(same_bits(back.data, data));
  EXPECT_EQ(back.sform_code, NIFTI_XFORM_ALIGNED_ANAT);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_EQ(back.sform[r][c], rows[r][c]);  // doubles, unrounded
  EXPECT_EQ(back.spacing, (std::vector<double>{0.5, 0.6, 0.7}));

  // Written back as NIfTI-1 (nifticlib 3.0.1 writes no single-file NIfTI-2): floats hold the grid.
  write_nifti(dir / "one.nii", data, back);
  const NiftiVolume one = read_nifti(dir / "one.nii");
  EXPECT_EQ(one.nifti_version, 1);
  EXPECT_TRUE(same_bits(one.data, data));
  EXPECT_EQ(one.sform[0][3], static_cast<double>(static_cast<float>(rows[0][3])));
}

TEST(Nifti, ExtensionsAreReadAndNotCopied) {
  TempDir dir;
  const torch::Tensor data = sample(torch::kUInt8, {5, 4, 3});
  write_nifti(dir / "plain.nii", data, {1.0, 1.0, 1.0});
  Bytes file = read_whole_file(dir / "plain.nii");
  // One comment extension (esize 16 = 8 bytes of esize and ecode, then 8 of text), voxels after it.
  file[348] = 1;
  Bytes extension(16, 0);
  const int32_t esize = 16, ecode = NIFTI_ECODE_COMMENT;
  std::memcpy(extension.data(), &esize, 4);
  std::memcpy(extension.data() + 4, &ecode, 4);
  std::memcpy(extension.data() + 8, "memcnn!", 8);
  file.insert(file.begin() + 352, extension.begin(), extension.end());
  nifti_1_header header = header_of(file);
  header.vox_offset = 368;
  put_header(file, header);
  write_file(dir / "extended.nii", file);

  const NiftiVolume extended = read_nifti(dir / "extended.nii");
  EXPECT_TRUE(same_bits(extended.data, data));
  ASSERT_EQ(extended.extensions.size(), 1u);
  EXPECT_EQ(extended.extensions[0].code, NIFTI_ECODE_COMMENT);
  EXPECT_EQ(extended.extensions[0].data, std::string("memcnn!\0", 8));

  write_nifti(dir / "derived.nii", data, extended);
  EXPECT_TRUE(read_nifti(dir / "derived.nii").extensions.empty());
  EXPECT_EQ(read_whole_file(dir / "derived.nii").size(), 352u + data.numel());
}

// ---------------------------------------------------------------- bad files and arguments

TEST(Nifti, BadFilesAreClearErrorsNamingTheFile) {
  TempDir dir;
  torch::manual_seed(1);
  // Random voxels do not compress: half of the .gz really is half of the data.
  const torch::Tensor noise = torch::rand({20, 20, 20});
  write_nifti(dir / "good.nii", noise, {1.0, 1.0, 1.0});
  write_nifti(dir / "good.nii.gz", noise, {1.0, 1.0, 1.0});
  const Bytes good = read_whole_file(dir / "good.nii");
  const Bytes good_gz = read_whole_file(dir / "good.nii.gz");

  expect_error([&] { read_nifti(dir / "missing.nii.gz"); }, {"missing.nii.gz", "no such file"});
  expect_error([&] { read_nifti(dir.path()); }, {dir.path(), ".nii or .nii.gz"});
  fs::create_directory(dir / "folder.nii");
  expect_error([&] { read_nifti(dir / "folder.nii"); }, {"folder.nii", "not a regular file"});
  write_file(dir / "volume.img", good);
  expect_error([&] { read_nifti(dir / "volume.img"); }, {"volume.img", ".nii or .nii.gz"});

  write_file(dir / "empty.nii", {});
  expect_error([&] { read_nifti(dir / "empty.nii"); }, {"empty.nii", "truncated"});
  write_file(dir / "short-header.nii", Bytes(good.begin(), good.begin() + 200));
  expect_error([&] { read_nifti(dir / "short-header.nii"); }, {"short-header.nii", "truncated", "348", "200"});
  write_file(dir / "short-header.nii.gz", gzip(Bytes(good.begin(), good.begin() + 200)));
  expect_error([&] { read_nifti(dir / "short-header.nii.gz"); }, {"short-header.nii.gz", "truncated", "200"});
  write_file(dir / "short-data.nii", Bytes(good.begin(), good.end() - 10));
  expect_error([&] { read_nifti(dir / "short-data.nii"); },
               {"short-data.nii", "truncated", "32000 bytes of voxels from byte 352", "32342"});
  write_file(dir / "half.nii.gz", Bytes(good_gz.begin(), good_gz.begin() + good_gz.size() / 2));
  expect_error([&] { read_nifti(dir / "half.nii.gz"); }, {"half.nii.gz", "truncated or corrupt gzip"});
  Bytes scrambled = good_gz;
  for (size_t i = scrambled.size() / 2; i < scrambled.size() / 2 + 64; ++i) scrambled[i] ^= 0x5a;
  write_file(dir / "scrambled.nii.gz", scrambled);
  expect_error([&] { read_nifti(dir / "scrambled.nii.gz"); }, {"scrambled.nii.gz", "corrupt"});
  // Damage only the CRC-32 in the gzip trailer: every voxel inflates intact, only the checksum tells.
  Bytes bad_checksum = good_gz;
  bad_checksum[bad_checksum.size() - 8] ^= 1;
  write_file(dir / "checksum.nii.gz", bad_checksum);
  expect_error([&] { read_nifti(dir / "checksum.nii.gz"); },
               {"checksum.nii.gz", "corrupt gzip data", "incorrect data check"});
  // With bytes after the voxels, zlib meets the checksum only when read on past them.
  Bytes padded = good;
  padded.resize(good.size() + 5000, 0);
  Bytes padded_gz = gzip(padded);
  write_file(dir / "padded.nii.gz", padded_gz);
  EXPECT_TRUE(same_bits(read_nifti(dir / "padded.nii.gz").data, noise));
  padded_gz[padded_gz.size() - 8] ^= 1;
  write_file(dir / "padded-checksum.nii.gz", padded_gz);
  expect_error([&] { read_nifti(dir / "padded-checksum.nii.gz"); },
               {"padded-checksum.nii.gz", "corrupt gzip data", "incorrect data check"});
  write_file(dir / "no-trailer.nii.gz", Bytes(good_gz.begin(), good_gz.end() - 8));
  expect_error([&] { read_nifti(dir / "no-trailer.nii.gz"); }, {"no-trailer.nii.gz", "ends before its checksum"});
  write_file(dir / "compressed.nii", good_gz);
  expect_error([&] { read_nifti(dir / "compressed.nii"); }, {"compressed.nii", "rename it to .nii.gz"});

  const std::string text(400, 'x');
  write_file(dir / "text.nii", Bytes(text.begin(), text.end()));
  expect_error([&] { read_nifti(dir / "text.nii"); }, {"text.nii", "not a NIfTI file", "348"});

  // Each edit makes a copy of good.nii with one header field wrong.
  const auto corrupt = [&](const std::string& name, const std::function<void(nifti_1_header&)>& edit) {
    write_file(dir / name, good);
    edit_header(dir / name, edit);
    return dir / name;
  };
  const std::string magic = corrupt("magic.nii", [](nifti_1_header& h) { std::memcpy(h.magic, "xyz", 4); });
  expect_error([&] { read_nifti(magic); }, {"magic.nii", "wrong magic 'xyz\\x00'", "n+1"});
  const std::string analyze = corrupt("analyze.nii", [](nifti_1_header& h) { std::memset(h.magic, 0, 4); });
  expect_error([&] { read_nifti(analyze); }, {"analyze.nii", "wrong magic", "ANALYZE"});
  const std::string pair = corrupt("pair.nii", [](nifti_1_header& h) { std::memcpy(h.magic, "ni1", 4); });
  expect_error([&] { read_nifti(pair); }, {"pair.nii", "separate .img"});
  const std::string unknown = corrupt("unknown-type.nii", [](nifti_1_header& h) { h.datatype = 77; });
  expect_error([&] { read_nifti(unknown); }, {"unknown-type.nii", "unknown datatype code 77"});
  const std::string complex = corrupt("complex.nii", [](nifti_1_header& h) { h.datatype = DT_COMPLEX64; });
  expect_error([&] { read_nifti(complex); }, {"complex.nii", "COMPLEX64 (32) is not supported", "float32"});
  const std::string rank = corrupt("rank.nii", [](nifti_1_header& h) { h.dim[0] = 9; });
  expect_error([&] { read_nifti(rank); }, {"rank.nii", "dim[0]", "9"});
  const std::string zero = corrupt("zero-size.nii", [](nifti_1_header& h) { h.dim[2] = 0; });
  expect_error([&] { read_nifti(zero); }, {"zero-size.nii", "dim[2] is 0"});
  const std::string big = corrupt("too-big.nii", [](nifti_1_header& h) { h.dim[3] = 4000; });
  expect_error([&] { read_nifti(big); }, {"too-big.nii", "truncated"});
}

// What a header declares is checked before anything is allocated: a volume over
// NiftiReadOptions::max_bytes, a vox_offset past the end of the file or leaving more than 64 MiB
// for extensions. A .nii.gz that promises more voxels than it holds fails once it has read what
// it holds (its buffer grows with the voxels read, so the 2 GB promised here are never allocated).
TEST(Nifti, HeadersAreCheckedAgainstTheLimitsBeforeAllocating) {
  TempDir dir;
  write_nifti(dir / "small.nii", torch::zeros({5, 4, 3}, torch::kUInt8), {1.0, 1.0, 1.0});
  NiftiReadOptions options;
  options.max_bytes = 59;
  expect_error([&] { read_nifti(dir / "small.nii", options); }, {"small.nii", "60 bytes", "max_bytes (59)"});
  options.max_bytes = 60;
  EXPECT_EQ(read_nifti(dir / "small.nii", options).data.numel(), 60);

  const Bytes file = read_whole_file(dir / "small.nii");
  const auto edited = [&](const std::function<void(nifti_1_header&)>& edit) {
    Bytes copy = file;
    nifti_1_header header = header_of(copy);
    edit(header);
    put_header(copy, header);
    return copy;
  };
  write_file(dir / "huge.nii.gz", gzip(edited([](nifti_1_header& h) {
               h.dim[1] = h.dim[2] = h.dim[3] = 32767;
               h.datatype = DT_FLOAT64;
               h.bitpix = 64;
             })));
  expect_error([&] { read_nifti(dir / "huge.nii.gz"); }, {"huge.nii.gz", "more than NiftiReadOptions::max_bytes"});
  write_file(dir / "promises.nii.gz", gzip(edited([](nifti_1_header& h) {
               h.dim[1] = 2000;
               h.dim[2] = 2000;
               h.dim[3] = 500;
             })));
  expect_error([&] { read_nifti(dir / "promises.nii.gz"); }, {"promises.nii.gz", "truncated or corrupt gzip"});
  write_file(dir / "offset.nii", edited([](nifti_1_header& h) { h.vox_offset = 100000; }));
  expect_error([&] { read_nifti(dir / "offset.nii"); }, {"offset.nii", "vox_offset 100000", "beyond the end"});
  write_file(dir / "extensions.nii.gz", gzip(edited([](nifti_1_header& h) { h.vox_offset = 1e9f; })));
  expect_error([&] { read_nifti(dir / "extensions.nii.gz"); }, {"extensions.nii.gz", "more than 64 MiB"});
}

TEST(Nifti, BadWritesAreClearErrorsAndLeaveNoFile) {
  TempDir dir;
  const NiftiVolume like = read_nifti(write_oriented(dir));
  const std::string path = dir / "out.nii.gz";
  expect_error([&] { write_nifti(path, torch::zeros({5, 4, 4}), like); },
               {"out.nii.gz", "[5, 4, 4]", "[5, 4, 3]", like.path});
  expect_error([&] { write_nifti(path, torch::zeros({5, 4}), like); }, {"out.nii.gz", "[5, 4]", "[5, 4, 3]"});
  expect_error([&] { write_nifti(path, torch::zeros({5, 4, 3}, torch::kBool), like); },
               {"out.nii.gz", "Bool", "cannot be stored"});
  expect_error([&] { write_nifti(path, torch::zeros({5, 4, 3}, torch::kFloat16), like); },
               {"out.nii.gz", "Half", "cannot be stored"});
  expect_error([&] { write_nifti(path, torch::Tensor(), like); }, {"out.nii.gz", "undefined"});
  expect_error([&] { write_nifti(path, torch::zeros({}), {1.0}); }, {"out.nii.gz", "0 dims"});
  expect_error([&] { write_nifti(path, torch::zeros({0, 3}), {1.0, 1.0}); }, {"out.nii.gz", "empty dim"});
  expect_error([&] { write_nifti(path, torch::zeros({40000}, torch::kUInt8), {1.0}); }, {"out.nii.gz", "32767"});
  expect_error([&] { write_nifti(path, torch::zeros({5, 4, 3}), NiftiVolume{}); }, {"out.nii.gz", "no NIfTI header"});
  expect_error([&] { write_nifti(path, torch::zeros({5, 4, 3}), {1.0, 1.0}); }, {"out.nii.gz", "2 voxel sizes"});
  expect_error([&] { write_nifti(path, torch::zeros({5, 4, 3}), {1.0, -1.0, 1.0}); }, {"out.nii.gz", "-1"});
  expect_error([&] { write_nifti(dir / "out.img", torch::zeros({5, 4, 3}), like); }, {"out.img", ".nii or .nii.gz"});
  expect_error([&] { write_nifti(dir / "no/such/folder/out.nii", torch::zeros({5, 4, 3}), like); },
               {"out.nii", "no/such/folder", "does not exist"});
  EXPECT_EQ(list_tree(dir.path()), std::vector<std::string>{"oriented.nii"});
}

}  // namespace
}  // namespace memcnn::data::test
