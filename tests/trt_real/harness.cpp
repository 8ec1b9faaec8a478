// Drive a Python calibrator through TensorRT's C++ calibrator interface, as TensorRT's builder does.
//
// The object is taken through the real bindings' own pybind11 registration: TensorRT registers its
// calibrator classes module-local, so a cast to exactly the registered C++ type is answered by the
// bindings' own loader (pybind11's foreign module-local load, found through the
// "__pybind11_module_local_v*" attribute of the class). The virtual calls below then land in the
// bindings' trampolines (python/src/infer/pyInt8.cpp), which marshal them into the Python methods.
//
// The interface is declared here from TensorRT's published C++ API reference (docs.nvidia.com,
// "nvinfer1::IInt8Calibrator Class Reference", 8.6.1 and 10.x; IVersionedInterface, 10.0.1 and
// 10.x): the order of the virtual functions is the published declaration order, which is what
// fixes the vtable slots. Nothing of TensorRT's headers is included or copied.
//
//   TRT_LAYOUT 8  (8.6):  IInt8Calibrator: getBatchSize, getBatch, readCalibrationCache,
//                         writeCalibrationCache, getAlgorithm, ~IInt8Calibrator
//   TRT_LAYOUT 10 (10.x): IVersionedInterface: getAPILanguage, getInterfaceInfo,
//                         ~IVersionedInterface; then IInt8Calibrator's five functions as above.
//                         The four concrete classes live in nvinfer1::v_1_0.
//   IInt8LegacyCalibrator adds getQuantile, getRegressionCutoff, readHistogramCache,
//   writeHistogramCache (both layouts).
//
// Every call is made with the GIL released, as the bindings' build_serialized_network releases it
// before TensorRT calls back; the trampolines must take it themselves.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#ifndef TRT_LAYOUT
#error "build with -DTRT_LAYOUT=8 or -DTRT_LAYOUT=10"
#endif

namespace py = pybind11;

namespace nvinfer1
{
enum class CalibrationAlgoType : int32_t
{
    kLEGACY_CALIBRATION = 0,
    kENTROPY_CALIBRATION = 1,
    kENTROPY_CALIBRATION_2 = 2,
    kMINMAX_CALIBRATION = 3,
};

#if TRT_LAYOUT >= 10
enum class APILanguage : int32_t
{
    kCPP = 0,
    kPYTHON = 1,
};

struct InterfaceInfo
{
    char const* kind;
    int32_t major;
    int32_t minor;
};

class IVersionedInterface
{
public:
    virtual APILanguage getAPILanguage() const noexcept { return APILanguage::kCPP; }
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0;
    virtual ~IVersionedInterface() noexcept = default;
};

class IInt8Calibrator : public IVersionedInterface
#else
class IInt8Calibrator
#endif
{
public:
    virtual int32_t getBatchSize() const noexcept = 0;
    virtual bool getBatch(void* bindings[], char const* names[], int32_t nbBindings) noexcept = 0;
    virtual void const* readCalibrationCache(std::size_t& length) noexcept = 0;
    virtual void writeCalibrationCache(void const* ptr, std::size_t length) noexcept = 0;
    virtual CalibrationAlgoType getAlgorithm() noexcept = 0;
    virtual ~IInt8Calibrator() noexcept = default;
};

#if TRT_LAYOUT >= 10
namespace v_1_0
{
#define CALIBKIT_INTERFACE(KIND)                                                                   \
    InterfaceInfo getInterfaceInfo() const noexcept override { return InterfaceInfo{KIND, 1, 0}; }
#else
#define CALIBKIT_INTERFACE(KIND)
#endif

// The concrete calibrators only answer getAlgorithm (and, 10.x, getInterfaceInfo) themselves.
// These bodies are never run here: the objects are the bindings' trampolines.
class IInt8EntropyCalibrator : public IInt8Calibrator
{
public:
    CALIBKIT_INTERFACE("IInt8EntropyCalibrator")
    CalibrationAlgoType getAlgorithm() noexcept override
    {
        return CalibrationAlgoType::kENTROPY_CALIBRATION;
    }
};

class IInt8EntropyCalibrator2 : public IInt8Calibrator
{
public:
    CALIBKIT_INTERFACE("IInt8EntropyCalibrator2")
    CalibrationAlgoType getAlgorithm() noexcept override
    {
        return CalibrationAlgoType::kENTROPY_CALIBRATION_2;
    }
};

class IInt8MinMaxCalibrator : public IInt8Calibrator
{
public:
    CALIBKIT_INTERFACE("IInt8MinMaxCalibrator")
    CalibrationAlgoType getAlgorithm() noexcept override
    {
        return CalibrationAlgoType::kMINMAX_CALIBRATION;
    }
};

class IInt8LegacyCalibrator : public IInt8Calibrator
{
public:
    CALIBKIT_INTERFACE("IInt8Calibrator")
    CalibrationAlgoType getAlgorithm() noexcept override
    {
        return CalibrationAlgoType::kLEGACY_CALIBRATION;
    }
    virtual double getQuantile() const noexcept = 0;
    virtual double getRegressionCutoff() const noexcept = 0;
    virtual void const* readHistogramCache(std::size_t& length) noexcept = 0;
    virtual void writeHistogramCache(void const* ptr, std::size_t length) noexcept = 0;
};

#if TRT_LAYOUT >= 10
} // namespace v_1_0
using v_1_0::IInt8EntropyCalibrator;
using v_1_0::IInt8EntropyCalibrator2;
using v_1_0::IInt8LegacyCalibrator;
using v_1_0::IInt8MinMaxCalibrator;
#endif
} // namespace nvinfer1

namespace
{
using nvinfer1::IInt8Calibrator;

// Load `obj` as exactly the registered C++ type T (module-local types are only found that way).
template <typename T>
T* load_as(py::handle obj)
{
    py::detail::make_caster<T> caster;
    if (!caster.load(obj, false))
    {
        return nullptr;
    }
    return py::detail::cast_op<T*>(caster);
}

std::pair<IInt8Calibrator*, char const*> calibrator(py::handle obj)
{
    if (auto* p = load_as<nvinfer1::IInt8EntropyCalibrator2>(obj))
        return {p, "IInt8EntropyCalibrator2"};
    if (auto* p = load_as<nvinfer1::IInt8EntropyCalibrator>(obj))
        return {p, "IInt8EntropyCalibrator"};
    if (auto* p = load_as<nvinfer1::IInt8MinMaxCalibrator>(obj))
        return {p, "IInt8MinMaxCalibrator"};
    if (auto* p = load_as<nvinfer1::IInt8LegacyCalibrator>(obj))
        return {p, "IInt8LegacyCalibrator"};
    throw py::type_error("the bindings did not hand out an nvinfer1 calibrator for this object");
}

nvinfer1::IInt8LegacyCalibrator* legacy(py::handle obj)
{
    if (auto* p = load_as<nvinfer1::IInt8LegacyCalibrator>(obj))
        return p;
    throw py::type_error("not an IInt8LegacyCalibrator");
}

// A Python error left set by a trampoline would surface later, somewhere unrelated.
void check_no_pending_error(char const* where)
{
    if (PyErr_Occurred())
    {
        PyErr_Clear();
        throw py::value_error(std::string(where) + " returned with a Python error still set");
    }
}

// Caller-owned memory, as TensorRT's: filled, passed, then overwritten and freed after the call.
struct HostBuffer
{
    std::vector<unsigned char> bytes;
    explicit HostBuffer(py::bytes const& data)
    {
        std::string s = data;
        bytes.assign(s.begin(), s.end());
    }
    ~HostBuffer() { std::memset(bytes.data(), 0xA5, bytes.size()); }
};

constexpr std::uintptr_t kUnset = 0xCA11B0000000ULL; // what getBatch found in each binding slot
} // namespace

PYBIND11_MODULE(calibkit_trt_harness, m)
{
    m.attr("LAYOUT") = TRT_LAYOUT;
    m.attr("UNSET") = py::int_(static_cast<unsigned long long>(kUnset));

    m.def("base_of", [](py::handle obj) { return std::string(calibrator(obj).second); });

    m.def("get_batch_size", [](py::handle obj) {
        IInt8Calibrator* cal = calibrator(obj).first;
        int32_t size;
        {
            py::gil_scoped_release nogil;
            size = cal->getBatchSize();
        }
        check_no_pending_error("getBatchSize");
        return size;
    });

    m.def("get_batch", [](py::handle obj, std::vector<std::string> const& names) {
        IInt8Calibrator* cal = calibrator(obj).first;
        std::vector<char const*> cnames;
        for (auto const& n : names)
            cnames.push_back(n.c_str());
        std::vector<void*> bindings(names.size(), reinterpret_cast<void*>(kUnset));
        bool more;
        {
            py::gil_scoped_release nogil;
            more = cal->getBatch(bindings.data(), cnames.data(), static_cast<int32_t>(names.size()));
        }
        check_no_pending_error("getBatch");
        std::vector<unsigned long long> pointers;
        for (void* p : bindings)
            pointers.push_back(reinterpret_cast<std::uintptr_t>(p));
        return py::make_tuple(more, pointers);
    });

    m.def("read_calibration_cache", [](py::handle obj) -> py::object {
        IInt8Calibrator* cal = calibrator(obj).first;
        std::size_t length = 0xBADC0DE;
        void const* ptr;
        {
            py::gil_scoped_release nogil;
            ptr = cal->readCalibrationCache(length);
        }
        check_no_pending_error("readCalibrationCache");
        if (ptr == nullptr)
            return py::none();
        return py::bytes(static_cast<char const*>(ptr), length);
    });

    m.def("write_calibration_cache", [](py::handle obj, py::bytes const& data) {
        IInt8Calibrator* cal = calibrator(obj).first;
        HostBuffer buffer(data);
        {
            py::gil_scoped_release nogil;
            cal->writeCalibrationCache(buffer.bytes.data(), buffer.bytes.size());
        }
        check_no_pending_error("writeCalibrationCache");
    });

    m.def("get_algorithm", [](py::handle obj) {
        IInt8Calibrator* cal = calibrator(obj).first;
        nvinfer1::CalibrationAlgoType algo;
        {
            py::gil_scoped_release nogil;
            algo = cal->getAlgorithm();
        }
        check_no_pending_error("getAlgorithm");
        return static_cast<int32_t>(algo);
    });

    // One calibration as the builder runs it (the order the stand-in models: sampleINT8's README
    // and Polygraphy's tests; the real builder's order is not visible without its library):
    // getBatchSize, readCalibrationCache; with a cache, getAlgorithm and done; otherwise getBatch
    // until false, writeCalibrationCache(`written`), getAlgorithm. All in C++, GIL released.
    m.def("calibrate", [](py::handle obj, std::vector<std::string> const& names,
                            py::bytes const& written, int max_batches) {
        IInt8Calibrator* cal = calibrator(obj).first;
        std::vector<char const*> cnames;
        for (auto const& n : names)
            cnames.push_back(n.c_str());
        HostBuffer out(written);
        std::vector<std::vector<unsigned long long>> batches;
        std::string cache;
        bool has_cache = false;
        int32_t size;
        nvinfer1::CalibrationAlgoType algo;
        {
            py::gil_scoped_release nogil;
            size = cal->getBatchSize();
            std::size_t length = 0;
            void const* ptr = cal->readCalibrationCache(length);
            if (ptr != nullptr && length != 0)
            {
                has_cache = true;
                cache.assign(static_cast<char const*>(ptr), length);
            }
            else
            {
                std::vector<void*> bindings(names.size());
                while (static_cast<int>(batches.size()) < max_batches
                    && cal->getBatch(bindings.data(), cnames.data(), static_cast<int32_t>(names.size())))
                {
                    std::vector<unsigned long long> pointers;
                    for (void* p : bindings)
                        pointers.push_back(reinterpret_cast<std::uintptr_t>(p));
                    batches.push_back(pointers);
                }
                cal->writeCalibrationCache(out.bytes.data(), out.bytes.size());
            }
            algo = cal->getAlgorithm();
        }
        check_no_pending_error("calibrate");
        py::dict result;
        result["batch_size"] = size;
        result["cache"] = has_cache ? py::object(py::bytes(cache)) : py::object(py::none());
        result["batches"] = batches;
        result["algorithm"] = static_cast<int32_t>(algo);
        return result;
    });

#if TRT_LAYOUT >= 10
    m.def("get_interface_info", [](py::handle obj) {
        IInt8Calibrator* cal = calibrator(obj).first;
        nvinfer1::InterfaceInfo info;
        int32_t language;
        {
            py::gil_scoped_release nogil;
            info = cal->getInterfaceInfo();
            language = static_cast<int32_t>(cal->getAPILanguage());
        }
        return py::make_tuple(std::string(info.kind), info.major, info.minor, language);
    });
#endif

    m.def("get_quantile_and_cutoff", [](py::handle obj) {
        auto* cal = legacy(obj);
        double quantile, cutoff;
        {
            py::gil_scoped_release nogil;
            quantile = cal->getQuantile();
            cutoff = cal->getRegressionCutoff();
        }
        check_no_pending_error("getQuantile/getRegressionCutoff");
        return py::make_tuple(quantile, cutoff);
    });

    m.def("read_histogram_cache", [](py::handle obj) {
        auto* cal = legacy(obj);
        std::size_t length = 0;
        void const* ptr;
        {
            py::gil_scoped_release nogil;
            ptr = cal->readHistogramCache(length);
        }
        check_no_pending_error("readHistogramCache");
        return py::make_tuple(ptr == nullptr, length);
    });

    m.def("write_histogram_cache", [](py::handle obj, py::bytes const& data) {
        auto* cal = legacy(obj);
        HostBuffer buffer(data);
        {
            py::gil_scoped_release nogil;
            cal->writeHistogramCache(buffer.bytes.data(), buffer.bytes.size());
        }
        check_no_pending_error("writeHistogramCache");
    });
}
