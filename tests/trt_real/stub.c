/*
 * Entry points that TensorRT's Python bindings (tensorrt_bindings/tensorrt.so) import from
 * libnvinfer, libnvonnxparser, libnvinfer_plugin and (8.x) libnvparsers, so that the dynamic
 * loader can load the real bindings on a machine without TensorRT's libraries.
 *
 * Nothing of TensorRT is here: each function only satisfies the loader and answers null / 0 /
 * false, which the bindings report as a failed creation (Builder, Runtime, Refitter, OnnxParser
 * raise "factory function returned nullptr"). The names are the undefined dynamic symbols of the
 * bindings' extension module (`nm -D --undefined-only tensorrt.so`); the 8.x C++ parser entry
 * points are given by their mangled names, which are valid C identifiers. Arguments are ignored.
 */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version)
{
    return NULL;
}
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *plugin_namespace) { return 0; }

/* TensorRT 8.x only: nvuffparser::createUffParser(), nvuffparser::FieldMap::FieldMap(char const*,
 * void const*, nvuffparser::FieldType, int), nvcaffeparser1::createCaffeParser(),
 * nvcaffeparser1::shutdownProtobufLibrary() */
void *_ZN11nvuffparser15createUffParserEv(void) { return NULL; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(
    void *self, const char *name, const void *data, int type, int length)
{
}
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return NULL; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) {}
