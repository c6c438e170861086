// torch.save's files without Python: the zip archive (data.pkl, data/<key> per storage, version)
// and the subset of Python's pickle that torch.save writes for tensors and plain data.
//
// Reading never calls anything the pickle names: the few callables torch.save uses to rebuild
// tensors (torch._utils._rebuild_tensor_v2 and its relatives) and collections.OrderedDict are
// recognised by name and done here; any other is refused. Containers are checked as they are
// built, so that a hostile file can make neither a cycle nor a nesting deep enough to overflow the
// stack when the result is destroyed.

#include "memcnn/files.h"
#include "memcnn/state_dict.h"

#include <caffe2/serialize/inline_container.h>  // the writer
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace memcnn {
namespace {

// ---- Python's pickle opcodes used by torch.save (protocols 2 to 5).
namespace op {
constexpr uint8_t MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', BININT = 'J', BININT1 = 'K',
                  BININT2 = 'M', NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINUNICODE = 'X', EMPTY_LIST = ']',
                  APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}', APPENDS = 'e',
                  BINGET = 'h', LONG_BINGET = 'j', LIST = 'l', BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's',
                  TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G', PROTO = 0x80, NEWOBJ = 0x81,
                  TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a,
                  SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95;
}  // namespace op

// Nesting of lists, dicts and tuples a file may have (a state dict has 1, an optimizer's 4).
constexpr int kMaxNesting = 64;

// Python's storage classes, which name a storage's element type in torch.save's files.
const std::vector<std::pair<std::string, c10::ScalarType>>& storage_types() {
  static const std::vector<std::pair<std::string, c10::ScalarType>> types = {
      {"FloatStorage", c10::kFloat},         {"DoubleStorage", c10::kDouble},
      {"HalfStorage", c10::kHalf},           {"BFloat16Storage", c10::kBFloat16},
      {"LongStorage", c10::kLong},           {"IntStorage", c10::kInt},
      {"ShortStorage", c10::kShort},         {"CharStorage", c10::kChar},
      {"ByteStorage", c10::kByte},           {"BoolStorage", c10::kBool},
      {"ComplexFloatStorage", c10::kComplexFloat}, {"ComplexDoubleStorage", c10::kComplexDouble},
      {"UntypedStorage", c10::kByte}};
  return types;
}

// What the unpickler's stack holds: plain data as an IValue, or what only exists while a tensor
// is rebuilt (a callable named by the file, a storage read from the archive, a tuple that holds
// such things).
struct Item {
  enum class Kind { value, global, storage, tuple } kind = Kind::value;
  c10::IValue value;                                // value
  std::string name;                                 // global: "module.name"
  torch::Tensor storage;                            // storage: its elements, 1-D
  std::shared_ptr<const std::vector<Item>> items;   // tuple
  int depth = 0;                                    // nesting below it (tuple)
};

class Unpickler {
 public:
  Unpickler(const std::string& path, const char* data, size_t size, const ZipArchive& archive)
      : path_(path), data_(data), size_(size), archive_(archive) {}

  c10::IValue run() {
    for (;;) {
      const uint8_t code = byte();
      if (code == op::STOP) break;
      step(code);
    }
    if (stack_.size() != 1 || !marks_.empty()) fail("its pickle ends with " + std::to_string(stack_.size()) + " values");
    return to_value(stack_.back(), "the file");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    TORCH_CHECK(false, "cannot read '", path_, "' as a torch.save file: ", what);
  }

  // ---- bytes
  uint8_t byte() {
    if (at_ >= size_) fail("its pickle is cut short (no STOP)");
    return static_cast<uint8_t>(data_[at_++]);
  }
  const char* take(uint64_t count) {
    if (count > size_ - at_) fail("its pickle is cut short");
    const char* p = data_ + at_;
    at_ += static_cast<size_t>(count);
    return p;
  }
  uint64_t little(size_t bytes) {
    const char* p = take(bytes);
    uint64_t value = 0;
    for (size_t i = bytes; i-- > 0;) value = value << 8 | static_cast<uint8_t>(p[i]);
    return value;
  }
  std::string line() {
    const char* start = data_ + at_;
    const void* end = std::memchr(start, '\n', size_ - at_);
    if (!end) fail("its pickle is cut short in a GLOBAL");
    const size_t length = static_cast<size_t>(static_cast<const char*>(end) - start);
    at_ += length + 1;
    return std::string(start, length);
  }

  // ---- stack
  Item pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("its pickle pops an empty stack");
    Item item = std::move(stack_.back());
    stack_.pop_back();
    return item;
  }
  Item& top() {
    if (stack_.empty()) fail("its pickle reads an empty stack");
    return stack_.back();
  }
  std::vector<Item> pop_to_mark() {
    if (marks_.empty()) fail("its pickle has no MARK where one is needed");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Item> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(mark)),
                            std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }
  void push(c10::IValue value) {
    Item item;
    item.value = std::move(value);
    stack_.push_back(std::move(item));
  }

  Item tuple(std::vector<Item> items) {
    Item item;
    item.kind = Item::Kind::tuple;
    for (const Item& element : items) {
      item.depth = std::max(item.depth, depth_of(element) + 1);
      hold(element);
    }
    if (item.depth > kMaxNesting) fail("its data is nested more than " + std::to_string(kMaxNesting) + " levels deep");
    item.items = std::make_shared<const std::vector<Item>>(std::move(items));
    return item;
  }

  // Lists and dicts may be filled only while no other container holds them: Python's pickler
  // fills each before it is inserted, and the rule makes cycles impossible and the nesting known.
  int depth_of(const Item& item) const {
    if (item.kind == Item::Kind::tuple) return item.depth;
    if (item.kind != Item::Kind::value || !(item.value.isList() || item.value.isGenericDict() || item.value.isTuple()))
      return 0;
    const auto found = depths_.find(item.value.internalToPointer());
    return found == depths_.end() ? 0 : found->second;
  }
  void fill(const c10::IValue& container, const std::vector<const Item*>& elements) {
    const void* key = container.internalToPointer();
    if (held_.count(key)) fail("its pickle changes a list or dict after putting it into another (a cycle?)");
    int& depth = depths_[key];
    for (const Item* element : elements) {
      if (element->kind == Item::Kind::value && element->value.isPtrType() && element->value.internalToPointer() == key)
        fail("its pickle puts a list or dict into itself (a cycle)");
      depth = std::max(depth, depth_of(*element) + 1);
      hold(*element);
    }
    if (depth > kMaxNesting) fail("its data is nested more than " + std::to_string(kMaxNesting) + " levels deep");
  }
  void hold(const Item& item) {
    if (item.kind == Item::Kind::value && (item.value.isList() || item.value.isGenericDict()))
      held_.insert(item.value.internalToPointer());
  }
  void created(const c10::IValue& container) {
    held_.erase(container.internalToPointer());
    depths_.erase(container.internalToPointer());
  }

  c10::IValue to_value(const Item& item, const std::string& where) {
    switch (item.kind) {
      case Item::Kind::value: return item.value;
      case Item::Kind::global: fail(where + " holds the Python object " + item.name + ", not data");
      case Item::Kind::storage: fail(where + " holds a bare storage, not a tensor");
      case Item::Kind::tuple: {
        // Once per tuple however often the pickle refers to it, so that tuples of references to
        // tuples cannot multiply into an exponential number of values.
        const auto done = converted_.find(item.items.get());
        if (done != converted_.end()) return done->second.second;
        std::vector<c10::IValue> elements;
        elements.reserve(item.items->size());
        for (const Item& element : *item.items) elements.push_back(to_value(element, where));
        c10::IValue value = c10::ivalue::Tuple::create(std::move(elements));
        depths_[value.internalToPointer()] = item.depth;
        converted_.emplace(item.items.get(), std::make_pair(item.items, value));
        return value;
      }
    }
    fail("internal error");
  }

  c10::IValue& container_below(size_t from_end) {
    if (stack_.size() <= from_end) fail("its pickle has no list or dict to fill");
    Item& target = stack_[stack_.size() - 1 - from_end];
    if (target.kind != Item::Kind::value) fail("its pickle fills something that is not a list or dict");
    return target.value;
  }

  void append(c10::IValue& list, const std::vector<Item>& items) {
    if (!list.isList()) fail("its pickle appends to a " + list.tagKind());
    std::vector<const Item*> elements;
    for (const Item& item : items) elements.push_back(&item);
    fill(list, elements);
    auto values = list.toList();
    for (const Item& item : items) values.push_back(to_value(item, "a list"));
  }

  void set_items(c10::IValue& dict, const std::vector<Item>& items) {
    if (!dict.isGenericDict()) fail("its pickle sets items of a " + dict.tagKind());
    if (items.size() % 2 != 0) fail("its pickle sets a key without a value");
    std::vector<const Item*> elements;
    for (const Item& item : items) elements.push_back(&item);
    fill(dict, elements);
    auto values = dict.toGenericDict();
    for (size_t i = 0; i < items.size(); i += 2) {
      c10::IValue key = to_value(items[i], "a dict's key");
      if (!(key.isString() || key.isInt() || key.isBool() || key.isDouble() || key.isNone()))
        fail("a dict's key is a " + key.tagKind() + " (keys must be strings or numbers)");
      values.insert_or_assign(std::move(key), to_value(items[i + 1], "a dict"));
    }
  }

  // ---- the callables torch.save uses
  int64_t integer(const Item& item, const std::string& what) {
    if (item.kind != Item::Kind::value || !item.value.isInt()) fail(what + " is not an integer");
    return item.value.toInt();
  }
  std::vector<int64_t> integers(const Item& item, const std::string& what) {
    if (item.kind != Item::Kind::tuple) fail(what + " is not a tuple");
    std::vector<int64_t> values;
    for (const Item& element : *item.items) values.push_back(integer(element, what + "'s element"));
    return values;
  }

  torch::Tensor rebuild_tensor(const std::vector<Item>& args) {
    if (args.size() < 4 || args[0].kind != Item::Kind::storage) fail("a tensor is rebuilt from other than a storage");
    const torch::Tensor& storage = args[0].storage;
    const int64_t offset = integer(args[1], "a tensor's storage offset");
    const std::vector<int64_t> size = integers(args[2], "a tensor's size");
    const std::vector<int64_t> stride = integers(args[3], "a tensor's stride");
    if (size.size() != stride.size()) fail("a tensor has " + std::to_string(size.size()) + " sizes and " +
                                           std::to_string(stride.size()) + " strides");
    // The elements it reaches must lie inside the storage (checked without overflow).
    bool empty = false;
    for (int64_t s : size) empty = empty || s == 0;
    uint64_t last = static_cast<uint64_t>(offset);
    if (offset < 0) fail("a tensor has a negative storage offset");
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0) fail("a tensor has a negative size or stride");
      if (empty) continue;
      const uint64_t reach = static_cast<uint64_t>(size[d] - 1);
      if (stride[d] != 0 && reach > (std::numeric_limits<uint64_t>::max() - last) / static_cast<uint64_t>(stride[d]))
        fail("a tensor reaches beyond its storage");
      last += reach * static_cast<uint64_t>(stride[d]);
    }
    if (!empty && last >= static_cast<uint64_t>(storage.numel())) fail("a tensor reaches beyond its storage");
    if (empty && static_cast<uint64_t>(offset) > static_cast<uint64_t>(storage.numel()))
      fail("a tensor's storage offset lies beyond its storage");
    torch::Tensor tensor = torch::empty({0}, storage.options());
    tensor.set_(storage.storage(), offset, size, stride);
    if (args.size() >= 5 && args[4].kind == Item::Kind::value && args[4].value.isBool() && args[4].value.toBool())
      tensor.requires_grad_(tensor.is_floating_point() || tensor.is_complex());
    return tensor;
  }

  torch::Tensor tensor_argument(const Item& item, const std::string& what) {
    if (item.kind != Item::Kind::value || !item.value.isTensor()) fail(what + " is not a tensor");
    return item.value.toTensor();
  }

  Item call(const std::string& name, const Item& arguments) {
    if (arguments.kind != Item::Kind::tuple) fail(name + " is called with other than a tuple");
    const std::vector<Item>& args = *arguments.items;
    Item result;
    if (name == "collections.OrderedDict" || name == "builtins.dict") {
      if (!args.empty()) fail(name + " is called with arguments");
      result.value = c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get());
      created(result.value);
    } else if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      result.value = rebuild_tensor(args);
    } else if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (args.size() < 2) fail(name + " is called with too few arguments");
      torch::Tensor tensor = tensor_argument(args[0], "a parameter's data");
      if (args[1].kind == Item::Kind::value && args[1].value.isBool() && args[1].value.toBool())
        tensor.requires_grad_(tensor.is_floating_point() || tensor.is_complex());
      result.value = tensor;
    } else if (name == "torch._tensor._rebuild_from_type_v2") {
      // (function, type, its arguments, state): a tensor of a subclass, or one carrying attributes.
      if (args.size() < 3 || args[0].kind != Item::Kind::global) fail(name + " is called with unexpected arguments");
      if (args[1].kind != Item::Kind::global ||
          (args[1].name != "torch.Tensor" && args[1].name != "torch.nn.parameter.Parameter"))
        fail("it holds a tensor of the class " + (args[1].kind == Item::Kind::global ? args[1].name : "?") +
             ", which only Python can rebuild");
      result = call(args[0].name, args[2]);
    } else if (name == "torch.Size") {
      if (args.size() != 1 || args[0].kind != Item::Kind::tuple) fail("torch.Size is called with unexpected arguments");
      result = args[0];
    } else if (name.rfind("torch._utils._rebuild_", 0) == 0) {
      fail("it holds a tensor rebuilt by " + name + " (quantized, sparse, nested or on a special device): only "
           "dense tensors are read; convert it in Python (tensor.dequantize(), .to_dense()) and save it again");
    } else {
      fail("its pickle calls " + name + ", which is not part of a state dict or of tensors and plain data (a "
           "pickled Python object? save model.state_dict() rather than the model)");
    }
    return result;
  }

  // BINPERSID: ('storage', storage class, key, location, number of elements).
  Item load_storage(const Item& id) {
    if (id.kind != Item::Kind::tuple || id.items->size() < 5) fail("a persistent id is not a storage's");
    const std::vector<Item>& fields = *id.items;
    if (fields[0].kind != Item::Kind::value || !fields[0].value.isString() || fields[0].value.toStringRef() != "storage")
      fail("a persistent id is not a storage's");
    if (fields[1].kind != Item::Kind::global) fail("a storage's class is not named");
    const std::string& type = fields[1].name;
    std::optional<c10::ScalarType> dtype;
    for (const auto& [name, scalar] : storage_types())
      if (type == "torch." + name) dtype = scalar;
    if (!dtype) fail("a storage is a " + type + ", which is not a storage class memcnn reads");
    if (fields[2].kind != Item::Kind::value || !fields[2].value.isString()) fail("a storage's key is not a string");
    const std::string key = fields[2].value.toStringRef();
    const auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      if (cached->second.scalar_type() != *dtype) fail("storage '" + key + "' is read as two element types");
      Item item;
      item.kind = Item::Kind::storage;
      item.storage = cached->second;
      return item;
    }
    const int64_t numel = integer(fields[4], "a storage's size");
    const std::string record = "data/" + key;
    if (key.empty() || key.find('/') != std::string::npos || !archive_.contains(record))
      fail("it has no record '" + record + "' for a storage");
    uint64_t nbytes = 0;
    try {
      nbytes = archive_.size_of(record);
    } catch (const std::runtime_error& e) {
      fail(e.what());
    }
    const size_t element = c10::elementSize(*dtype);
    if (numel < 0 || static_cast<uint64_t>(numel) * element != nbytes)
      fail("record '" + record + "' holds " + std::to_string(nbytes) + " bytes, not " + std::to_string(numel) +
           " elements of " + std::string(c10::toString(*dtype)));
    torch::Tensor storage = torch::empty({numel}, torch::TensorOptions().dtype(*dtype));
    try {
      if (nbytes > 0) archive_.read(record, storage.data_ptr());
    } catch (const std::runtime_error& e) {
      fail(e.what());
    }
    storages_.emplace(key, storage);
    Item item;
    item.kind = Item::Kind::storage;
    item.storage = storage;
    return item;
  }

  void memo_put(uint64_t index) { memo_[index] = top(); }
  void memo_get(uint64_t index) {
    const auto found = memo_.find(index);
    if (found == memo_.end()) fail("its pickle reads memo entry " + std::to_string(index) + ", never written");
    stack_.push_back(found->second);
  }

  void step(uint8_t code) {
    switch (code) {
      case op::PROTO: byte(); break;
      case op::FRAME: take(8); break;
      case op::MARK: marks_.push_back(stack_.size()); break;
      case op::POP: pop(); break;
      case op::POP_MARK: pop_to_mark(); break;
      case op::DUP: stack_.push_back(top()); break;
      case op::NONE: push(c10::IValue()); break;
      case op::NEWTRUE: push(true); break;
      case op::NEWFALSE: push(false); break;
      case op::BININT: push(static_cast<int64_t>(static_cast<int32_t>(little(4)))); break;
      case op::BININT1: push(static_cast<int64_t>(little(1))); break;
      case op::BININT2: push(static_cast<int64_t>(little(2))); break;
      case op::LONG1: {
        const uint8_t n = byte();
        if (n > 8) fail("an integer has " + std::to_string(n) + " bytes (more than 64 bits)");
        uint64_t value = n ? little(n) : 0;
        if (n > 0 && n < 8 && (value >> (8 * n - 1)) & 1) value |= ~uint64_t{0} << (8 * n);  // sign
        push(static_cast<int64_t>(value));
        break;
      }
      case op::BINFLOAT: {
        const char* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = bits << 8 | static_cast<uint8_t>(p[i]);  // big-endian
        double value;
        std::memcpy(&value, &bits, sizeof value);
        push(value);
        break;
      }
      case op::SHORT_BINUNICODE: {
        const uint8_t n = byte();
        push(std::string(take(n), n));
        break;
      }
      case op::BINUNICODE: {
        const uint64_t n = little(4);
        push(std::string(take(n), static_cast<size_t>(n)));
        break;
      }
      case op::BINUNICODE8: {
        const uint64_t n = little(8);
        push(std::string(take(n), static_cast<size_t>(n)));
        break;
      }
      case op::EMPTY_LIST:
      case op::LIST: {
        std::vector<Item> items = code == op::LIST ? pop_to_mark() : std::vector<Item>{};
        push(c10::impl::GenericList(c10::AnyType::get()));
        created(top().value);
        append(top().value, items);
        break;
      }
      case op::EMPTY_DICT:
      case op::DICT: {
        std::vector<Item> items = code == op::DICT ? pop_to_mark() : std::vector<Item>{};
        push(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
        created(top().value);
        set_items(top().value, items);
        break;
      }
      case op::EMPTY_TUPLE: stack_.push_back(tuple({})); break;
      case op::TUPLE: stack_.push_back(tuple(pop_to_mark())); break;
      case op::TUPLE1:
      case op::TUPLE2:
      case op::TUPLE3: {
        std::vector<Item> items(code - op::TUPLE1 + 1);
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        stack_.push_back(tuple(std::move(items)));
        break;
      }
      case op::APPEND: {
        Item item = pop();
        append(container_below(0), {item});
        break;
      }
      case op::APPENDS: {
        std::vector<Item> items = pop_to_mark();
        append(container_below(0), items);
        break;
      }
      case op::SETITEM: {
        Item value = pop();
        Item key = pop();
        set_items(container_below(0), {key, value});
        break;
      }
      case op::SETITEMS: {
        std::vector<Item> items = pop_to_mark();
        set_items(container_below(0), items);
        break;
      }
      case op::GLOBAL: {
        Item item;
        item.kind = Item::Kind::global;
        const std::string module = line();
        item.name = module + "." + line();
        stack_.push_back(std::move(item));
        break;
      }
      case op::STACK_GLOBAL: {
        const Item name = pop();
        const Item module = pop();
        if (module.kind != Item::Kind::value || !module.value.isString() || name.kind != Item::Kind::value ||
            !name.value.isString())
          fail("its pickle names a global by other than strings");
        Item item;
        item.kind = Item::Kind::global;
        item.name = module.value.toStringRef() + "." + name.value.toStringRef();
        stack_.push_back(std::move(item));
        break;
      }
      case op::REDUCE:
      case op::NEWOBJ: {
        Item arguments = pop();
        Item callable = pop();
        if (callable.kind != Item::Kind::global) fail("its pickle calls something that is not a named function");
        stack_.push_back(call(callable.name, arguments));
        break;
      }
      case op::BUILD: {
        // An OrderedDict's attributes (state_dict's _metadata: versions of the modules' formats).
        pop();
        const Item& target = top();
        if (target.kind != Item::Kind::value || !target.value.isGenericDict())
          fail("its pickle sets the attributes of something other than a dict");
        break;
      }
      case op::BINPERSID: {
        Item id = pop();
        stack_.push_back(load_storage(id));
        break;
      }
      case op::BINPUT: memo_put(little(1)); break;
      case op::LONG_BINPUT: memo_put(little(4)); break;
      case op::MEMOIZE: memo_put(memo_.size()); break;
      case op::BINGET: memo_get(little(1)); break;
      case op::LONG_BINGET: memo_get(little(4)); break;
      default: {
        std::ostringstream hex;
        hex << "0x" << std::hex << static_cast<int>(code);
        fail("its pickle uses opcode " + hex.str() + " at byte " + std::to_string(at_ - 1) +
             ", which torch.save does not write for tensors and plain data");
      }
    }
  }

  const std::string& path_;
  const char* data_;
  size_t size_;
  size_t at_ = 0;
  const ZipArchive& archive_;
  std::vector<Item> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Item> memo_;
  std::unordered_map<std::string, torch::Tensor> storages_;
  std::unordered_set<const void*> held_;
  std::unordered_map<const void*, int> depths_;
  // Tuples by their elements' address (kept alive, so that no other tuple takes the address).
  std::unordered_map<const void*, std::pair<std::shared_ptr<const std::vector<Item>>, c10::IValue>> converted_;
};

// ---- Writing: the same subset, as Python's pickler writes it (protocol 2).
class Pickler {
 public:
  // data.pkl, then a record per storage, as torch.save orders them.
  void run(const c10::IValue& value, caffe2::serialize::PyTorchStreamWriter& archive) {
    out_ += static_cast<char>(op::PROTO);
    out_ += '\x02';
    write(value, 0);
    out_ += static_cast<char>(op::STOP);
    archive.writeRecord("data.pkl", out_.data(), out_.size());
    for (const auto& [key, storage] : storages_) archive.writeRecord("data/" + key, storage.data(), storage.nbytes());
  }

 private:
  void code(uint8_t c) { out_ += static_cast<char>(c); }
  void little(uint64_t value, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) out_ += static_cast<char>((value >> (8 * i)) & 0xff);
  }
  void global(const std::string& module, const std::string& name) {
    code(op::GLOBAL);
    out_ += module + "\n" + name + "\n";
  }
  void string(const std::string& text) {
    code(op::BINUNICODE);
    little(text.size(), 4);
    out_ += text;
  }
  void integer(int64_t value) {
    if (value >= 0 && value < 256) {
      code(op::BININT1);
      little(static_cast<uint64_t>(value), 1);
    } else if (value >= 0 && value < 65536) {
      code(op::BININT2);
      little(static_cast<uint64_t>(value), 2);
    } else if (value >= std::numeric_limits<int32_t>::min() && value <= std::numeric_limits<int32_t>::max()) {
      code(op::BININT);
      little(static_cast<uint32_t>(static_cast<int32_t>(value)), 4);
    } else {
      code(op::LONG1);
      little(8, 1);
      little(static_cast<uint64_t>(value), 8);
    }
  }
  void tuple_of_integers(c10::IntArrayRef values) {
    code(op::MARK);
    for (int64_t v : values) integer(v);
    code(op::TUPLE);
  }

  void write(const c10::IValue& value, int depth) {
    TORCH_CHECK(depth <= kMaxNesting, "write_torch_file: the value is nested more than ", kMaxNesting,
                " levels deep");
    if (value.isNone()) {
      code(op::NONE);
    } else if (value.isBool()) {
      code(value.toBool() ? op::NEWTRUE : op::NEWFALSE);
    } else if (value.isInt()) {
      integer(value.toInt());
    } else if (value.isDouble()) {
      code(op::BINFLOAT);
      uint64_t bits;
      const double number = value.toDouble();
      std::memcpy(&bits, &number, sizeof bits);
      for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);  // big-endian
    } else if (value.isString()) {
      string(value.toStringRef());
    } else if (value.isTensor()) {
      tensor(value.toTensor());
    } else if (value.isTuple()) {
      const auto& elements = value.toTupleRef().elements();
      code(op::MARK);
      for (const auto& element : elements) write(element, depth + 1);
      code(op::TUPLE);
    } else if (value.isList()) {
      code(op::EMPTY_LIST);
      const auto list = value.toListRef();
      for (size_t start = 0; start < list.size(); start += 1000) {
        code(op::MARK);
        for (size_t i = start; i < std::min(list.size(), start + 1000); ++i) write(list[i], depth + 1);
        code(op::APPENDS);
      }
    } else if (value.isGenericDict()) {
      code(op::EMPTY_DICT);
      const auto dict = value.toGenericDict();
      size_t in_batch = 0;
      for (const auto& entry : dict) {
        if (in_batch == 0) code(op::MARK);
        TORCH_CHECK(entry.key().isString() || entry.key().isInt(), "write_torch_file: a dict's key is a ",
                    entry.key().tagKind(), "; keys must be strings or integers");
        write(entry.key(), depth + 1);
        write(entry.value(), depth + 1);
        if (++in_batch == 1000) {
          code(op::SETITEMS);
          in_batch = 0;
        }
      }
      if (in_batch > 0) code(op::SETITEMS);
    } else {
      TORCH_CHECK(false, "write_torch_file: cannot write a ", value.tagKind(),
                  " (tensors, dicts, lists, tuples, strings, numbers, booleans and None can be written)");
    }
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward hooks),
  // the storage written once however many tensors view it.
  void tensor(const torch::Tensor& given) {
    TORCH_CHECK(given.defined(), "write_torch_file: cannot write an undefined tensor");
    TORCH_CHECK(given.layout() == torch::kStrided && !given.is_quantized(),
                "write_torch_file: only dense tensors can be written, not ", given.layout(), " ones");
    const torch::Tensor t = given.device().is_cpu() ? given : given.cpu();
    std::string storage_class;
    for (const auto& [name, scalar] : storage_types())
      if (scalar == t.scalar_type() && name != "UntypedStorage") storage_class = name;
    TORCH_CHECK(!storage_class.empty(), "write_torch_file: tensors of type ", t.scalar_type(), " cannot be written");
    const size_t element = t.element_size();
    const c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
    auto found = keys_.find(impl);
    if (found == keys_.end()) {
      const std::string key = std::to_string(keys_.size());
      storages_.emplace_back(key, t.storage());
      found = keys_.emplace(impl, std::make_pair(key, t.storage().nbytes() / element)).first;
    }
    global("torch._utils", "_rebuild_tensor_v2");
    code(op::MARK);
    code(op::MARK);
    string("storage");
    global("torch", storage_class);
    string(found->second.first);
    string("cpu");
    integer(static_cast<int64_t>(found->second.second));
    code(op::TUPLE);
    code(op::BINPERSID);
    integer(t.storage_offset());
    tuple_of_integers(t.sizes());
    tuple_of_integers(t.strides());
    code(t.requires_grad() ? op::NEWTRUE : op::NEWFALSE);
    global("collections", "OrderedDict");
    code(op::EMPTY_TUPLE);
    code(op::REDUCE);
    code(op::TUPLE);
    code(op::REDUCE);
  }

  std::string out_;
  std::vector<std::pair<std::string, c10::Storage>> storages_;  // key, storage: records after data.pkl
  std::unordered_map<const c10::StorageImpl*, std::pair<std::string, size_t>> keys_;  // key, elements
};

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

// What a file that is not a torch.save zip archive is, for the error.
std::string describe_other_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[16] = {};
  in.read(head, sizeof head);
  const std::string start(head, static_cast<size_t>(in.gcount()));
  if (start.size() >= 2 && static_cast<uint8_t>(start[0]) == op::PROTO)
    return "it is a bare pickle: PyTorch's legacy format (torch.save before PyTorch 1.6, or with "
           "_use_new_zipfile_serialization=False) or a pickle of something else; open it in Python with torch.load "
           "and save it again with torch.save's default format";
  if (starts_with(start, "PK")) return "";
  return "it is not a zip archive (torch.save's format since PyTorch 1.6)";
}

}  // namespace

c10::IValue read_torch_file(const std::string& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cannot read '", path, "': no such file");
  const std::string other = describe_other_file(path);
  TORCH_CHECK(other.empty(), "cannot read '", path, "' as a torch.save file: ", other);
  // Read with memcnn's own zip reader: LibTorch's (miniz) leaked when it refused a damaged archive.
  std::optional<ZipArchive> opened;
  try {
    opened.emplace(path);
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "cannot read '", path, "' as a torch.save file: ", e.what());
  }
  const ZipArchive& archive = *opened;
  TORCH_CHECK(!archive.contains("constants.pkl") && !archive.contains("code/__torch__.py"),
              "cannot read '", path, "' as a torch.save file: it is a TorchScript archive (torch.jit.save, or "
              "LibTorch's torch::save of a module or archive): load it with torch::jit::load or torch::load");
  TORCH_CHECK(archive.contains("data.pkl"), "cannot read '", path,
              "' as a torch.save file: the archive has no data.pkl record (not written by torch.save)");
  std::string pickle;
  try {
    if (archive.contains("byteorder")) {
      const std::string order = archive.read("byteorder");
      TORCH_CHECK(order == "little", "cannot read '", path, "' as a torch.save file: its tensors are stored '",
                  order, "'-endian; save it on a little-endian machine");
    }
    pickle = archive.read("data.pkl");
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "cannot read '", path, "' as a torch.save file: ", e.what());
  }
  return Unpickler(path, pickle.data(), pickle.size(), archive).run();
}

StateDict read_state_dict(const std::string& path) {
  const c10::IValue value = read_torch_file(path);
  TORCH_CHECK(value.isGenericDict(), "'", path, "' holds a ", value.tagKind(),
              ", not a state dict (a dict from names to tensors): save model.state_dict()");
  StateDict tensors;
  for (const auto& entry : value.toGenericDict()) {
    TORCH_CHECK(entry.key().isString(), "'", path, "' holds a dict with a ", entry.key().tagKind(),
                " key, not a state dict (a dict from names to tensors)");
    const std::string& name = entry.key().toStringRef();
    if (!entry.value().isTensor()) {
      std::string hint;
      if (entry.value().isGenericDict())
        hint = " (a checkpoint holding several things? save its state dict alone, e.g. torch.save(checkpoint['" +
               name + "'], path))";
      TORCH_CHECK(false, "'", path, "' is not a state dict: its entry '", name, "' is a ", entry.value().tagKind(),
                  ", not a tensor", hint);
    }
    tensors.insert(name, entry.value().toTensor());
  }
  return tensors;
}

void write_torch_file(const c10::IValue& value, const std::string& path) {
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter archive([&bytes](const void* data, size_t size) {
      bytes.append(static_cast<const char*>(data), size);
      return size;
    });
    Pickler().run(value, archive);
    archive.writeRecord("byteorder", "little", 6);
    archive.writeEndOfFile();
  }
  write_file_atomically(path, bytes);
}

void write_state_dict(const StateDict& tensors, const std::string& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& item : tensors) dict.insert(item.key(), item.value());
  write_torch_file(dict, path);
}

}  // namespace memcnn
