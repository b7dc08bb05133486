/* libvtc: classify videos, frames and live streams with a vtc-deploy artifact, from C.
 *
 * Shape (SQLite / mmdeploy style): opaque handles; every function returns a status (VTC_OK = 0 or an error
 * code); the message of the last failure is vtc_errmsg(handle) or vtc_last_error(). Nothing is printed, nothing
 * aborts, no C++ exception crosses this boundary.
 *
 * Ownership is written beside each function: "caller frees with X" means the library allocated it and the caller
 * must release it with X exactly once; "borrowed" means the pointer belongs to the library and stays valid for the
 * stated lifetime; inputs are only read during the call and never kept.
 *
 * Thread safety: one vtc_classifier may be used from several threads at once (classify, embed, stream sessions,
 * accessors); vtc_set_classes may run concurrently with classification -- every call sees either the old or the
 * new classes, never a mix. vtc_close must not race any other call on the same handle. A vtc_stream is NOT
 * thread-safe: use one session per thread (many sessions may share one classifier). Error messages are kept per
 * thread, so a message read on one thread is never overwritten by another thread's failure.
 */
#ifndef VTC_VTC_H
#define VTC_VTC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define VTC_API __declspec(dllexport)
#else
#define VTC_API __attribute__((visibility("default")))
#endif

#define VTC_VERSION_MAJOR 0
#define VTC_VERSION_MINOR 1

/* Status codes. */
typedef enum vtc_status {
  VTC_OK = 0,
  VTC_ERR_ARGUMENT = 1,    /* a NULL handle/pointer, a wrong shape, dtype or option value */
  VTC_ERR_ARTIFACT = 2,    /* the artifact directory, manifest or a graph is missing, invalid or altered */
  VTC_ERR_DECODE = 3,      /* a video cannot be opened or decoded (per-file: also set in vtc_result.status) */
  VTC_ERR_BACKEND = 4,     /* ONNX Runtime failed or the execution provider is not available */
  VTC_ERR_UNSUPPORTED = 5, /* the artifact lacks what the call needs (text.onnx, streaming graphs) */
  VTC_ERR_LABELS = 6,      /* a class list or prompt template is invalid */
  VTC_ERR_MEMORY = 7,      /* out of memory */
  VTC_ERR_INTERNAL = 8     /* a bug: please report it with the message */
} vtc_status;

/* Element types of app-provided tensors (only VTC_DTYPE_UINT8 is accepted for frames). */
typedef enum vtc_dtype { VTC_DTYPE_UINT8 = 1, VTC_DTYPE_FLOAT32 = 2, VTC_DTYPE_INT64 = 3 } vtc_dtype;

typedef struct vtc_classifier vtc_classifier; /* an opened artifact with its ONNX Runtime sessions */
typedef struct vtc_stream vtc_stream;         /* a sliding-window session over pushed frames */

/* Options of vtc_open. Initialise with vtc_options_init (it sets `size`, so later fields can be added). */
typedef struct vtc_options {
  size_t size;              /* sizeof(vtc_options), set by vtc_options_init */
  int threads;              /* ONNX Runtime intra-op threads per session; 0: ONNX Runtime's default */
  int batch;                /* views per inference call (default 4) */
  int decode_threads;       /* threads decoding files ahead of inference (default 2) */
  const char* provider;     /* "cpu" (default), "cuda", "tensorrt" or "auto" (tensorrt > cuda > cpu, as built) */
  const char* const* provider_option_keys;   /* execution provider options (e.g. "device_id", "trt_fp16_enable"), */
  const char* const* provider_option_values; /* passed to ONNX Runtime's Update{CUDA,TensorRT}ProviderOptions */
  size_t num_provider_options;
  int check_hash;           /* 1 (default): every graph must match the sha256 in the manifest */
  int low_memory;           /* 1: no pre-packed weights (CPU provider), inference 3% (AVX2) to 12% (AVX-512)
                               slower. Saves memory only where glibc's heap is left alone at session creation
                               (VTC_KEEP_MALLOC=1, MALLOC_* settings, another C library): ~190 MB on ViT-B/32
                               fp32 there; nothing otherwise (README, "C and C++"); 0 (default) */
} vtc_options;

/* Options of one classification call. Initialise with vtc_run_options_init. */
typedef struct vtc_run_options {
  size_t size; /* sizeof(vtc_run_options) */
  int topk;    /* predictions per result (default 5; capped at the number of classes) */
  int clips;   /* temporal clips per video; 0: the manifest's default */
  int crops;   /* 1 (centre) or 3 (Text4Vis left, right, centre); 0: the manifest's default */
} vtc_run_options;

typedef struct vtc_prediction {
  int index;         /* class index */
  const char* label; /* class name, UTF-8 */
  float logit;       /* logit scale x cosine, aggregated over views */
  double prob;       /* softmax over all classes */
} vtc_prediction;

/* One result: a video, a set of frames, or a stream window. Owned by the array it came in. */
typedef struct vtc_result {
  const char* video;         /* the path given, "<frames N>" for frames, the stream's name for windows */
  int status;                /* VTC_OK or the error (e.g. VTC_ERR_DECODE) of this one input */
  const char* error;         /* NULL when status == VTC_OK; else one line naming the input */
  size_t num_topk;
  const vtc_prediction* topk; /* [num_topk], best first */
  size_t num_classes;
  const float* logits;       /* [num_classes], aggregated over views (NULL on error) */
  size_t embed_dim;
  const float* embedding;    /* [embed_dim], L2-normalised (NULL on error) */
  int views;                 /* clips x crops that were aggregated */
  int64_t num_frames;        /* frames in the video (files and frames) */
  /* stream windows only: frames [start_frame, end_frame) and times */
  int64_t start_frame, end_frame;
  double start_s, end_s;     /* start_frame / fps and end_frame / fps; NaN when the stream has no fps */
  double start_pts, end_pts; /* timestamps pushed with the window's first and last frame */
} vtc_result;

/* Facts from the manifest. Strings are borrowed from the classifier (valid until vtc_close). */
typedef struct vtc_info {
  size_t size;           /* sizeof(vtc_info), set by the caller or vtc_get_info */
  int frames;            /* T */
  int input_size;        /* S: the square crop fed to the encoder */
  int input_resize;      /* the shorter side is resized to this before cropping */
  const char* input_kind; /* "uint8" or "float" */
  int embed_dim;
  size_t num_classes;    /* current classes (after vtc_set_classes) */
  const char* sampling;  /* "uniform" or "dense" */
  int default_clips, default_crops, dense_window;
  float logit_scale;
  const char* precision; /* "fp32", "fp16", "int8" */
  const char* architecture;
  int has_text;          /* text.onnx present: vtc_set_classes works */
  int has_streaming;     /* frames.onnx + head.onnx present: vtc_stream_open works */
} vtc_info;

/* ---------------------------------------------------------------------------------------------- errors, version */

/* Borrowed static string: "0.1.0". */
VTC_API const char* vtc_version(void);
/* Borrowed static string naming a status ("VTC_ERR_DECODE"). */
VTC_API const char* vtc_status_name(int status);
/* The message of this thread's last failed call on `clf` ("" when none). Borrowed: valid until the next vtc call
 * on this thread. Accepts NULL (then the same as vtc_last_error). */
VTC_API const char* vtc_errmsg(const vtc_classifier* clf);
/* The message of this thread's last failed call, with or without a handle. Borrowed, as above. */
VTC_API const char* vtc_last_error(void);

/* ---------------------------------------------------------------------------------------------- open, info, close */

VTC_API void vtc_options_init(vtc_options* opts);
VTC_API void vtc_run_options_init(vtc_run_options* opts);

/* Open the artifact directory written by `vtc-deploy export`. `opts` may be NULL (defaults). On success *out is a
 * new handle: caller frees with vtc_close. On failure *out is NULL and vtc_last_error() says why. The first call
 * creates the process's ONNX Runtime environment with its telemetry events off unless ORT_DISABLE_TELEMETRY=0;
 * for none at all (ONNX Runtime's process event and device id), have ORT_DISABLE_TELEMETRY=1 in the environment
 * before it (README, "C and C++"). */
VTC_API int vtc_open(const char* artifact_dir, const vtc_options* opts, vtc_classifier** out);
/* Release the handle and everything it owns (results already returned stay valid). NULL is a no-op. With streams
 * of this classifier still open it returns VTC_ERR_ARGUMENT and closes nothing (close the streams first). */
VTC_API int vtc_close(vtc_classifier* clf);

/* Manifest facts into *info (caller-owned struct; strings borrowed until vtc_close). */
VTC_API int vtc_get_info(vtc_classifier* clf, vtc_info* info);
/* The name of class `index` of the current classes. *label is borrowed until vtc_close (also across
 * vtc_set_classes). */
VTC_API int vtc_class_name(vtc_classifier* clf, size_t index, const char** label);
/* The manifest as JSON text. *json is borrowed until vtc_close. */
VTC_API int vtc_manifest_json(vtc_classifier* clf, const char** json);

/* ---------------------------------------------------------------------------------------------- classify */

/* Classify `n` video files (decode, Text4Vis sampling, preprocessing, inference, view aggregation). `run` may be
 * NULL (defaults). A file that fails is a result with status != VTC_OK and an `error`; the call itself still
 * returns VTC_OK. *results: caller frees with vtc_results_free(*results, n). */
VTC_API int vtc_classify_files(vtc_classifier* clf, const char* const* paths, size_t n, const vtc_run_options* run,
                               vtc_result** results);

/* Classify frames the app decoded itself: `data` is a C-contiguous tensor of `dtype` with shape[ndim]; it must be
 * VTC_DTYPE_UINT8 [N, H, W, 3] RGB. The N frames are treated as a video (sampled, preprocessed, aggregated exactly
 * as a file). *result: caller frees with vtc_results_free(*result, 1). */
VTC_API int vtc_classify_frames(vtc_classifier* clf, const void* data, int dtype, const int64_t* shape, int ndim,
                                const vtc_run_options* run, vtc_result** result);

/* Called once per input, in input order, as soon as that result and all before it are complete. `result` is
 * borrowed for the duration of the call only. */
typedef void (*vtc_result_callback)(const vtc_result* result, size_t index, void* user);

/* As vtc_classify_files, but each result goes to `callback` as it completes (nothing to free). */
VTC_API int vtc_classify_files_cb(vtc_classifier* clf, const char* const* paths, size_t n, const vtc_run_options* run,
                                  vtc_result_callback callback, void* user);

/* As vtc_classify_frames, only the embedding: writes embed_dim floats (L2-normalised) into `embedding`, which
 * holds `capacity` floats (caller-owned). */
VTC_API int vtc_embed_frames(vtc_classifier* clf, const void* data, int dtype, const int64_t* shape, int ndim,
                             const vtc_run_options* run, float* embedding, size_t capacity);

/* The Text4Vis test-time frame indices (vtc_deploy.sampling): `rule` "uniform" or "dense", an `num_frames`-frame
 * video, T = `frames`, `clips` clips, dense `window` (128 in Text4Vis). Writes clips x frames indices (clip-major)
 * into `out` (caller-owned, `capacity` int64s). For apps that decode only the frames a video needs. */
VTC_API int vtc_sample_indices(const char* rule, int64_t num_frames, int frames, int clips, int window, int64_t* out,
                               size_t capacity);

/* Free an array of `n` results returned by this library. NULL is a no-op. */
VTC_API void vtc_results_free(vtc_result* results, size_t n);

/* ---------------------------------------------------------------------------------------------- classes */

/* Classify against other classes from now on, without re-exporting: `names[num_names]` (UTF-8) with `templates`
 * (each with exactly one "{}"; NULL/0: the artifact's templates) through text.onnx and the CLIP tokenizer. The
 * result equals `vtc-deploy rebake`. Needs text.onnx (VTC_ERR_UNSUPPORTED otherwise). Text that looks like
 * mojibake (UTF-8 mis-decoded as Latin-1, Windows-1252, ...: Python's ftfy would repair it, this tokenizer does not)
 * or is not valid UTF-8 is refused with VTC_ERR_LABELS, never tokenized differently. */
VTC_API int vtc_set_classes(vtc_classifier* clf, const char* const* names, size_t num_names,
                            const char* const* templates, size_t num_templates);

/* As vtc_set_classes, with the names from `source`: a bundled list (kinetics400, ucf101, hmdb51, activitynet200),
 * a .csv with an id,name header, or a text file with one name per line (vtc_deploy.labels rules). */
VTC_API int vtc_set_classes_from(vtc_classifier* clf, const char* source, const char* const* templates,
                                 size_t num_templates);

/* ---------------------------------------------------------------------------------------------- streaming */

/* A sliding-window session: windows [k*stride, k*stride + window) frames, each classified as Text4Vis classifies a
 * `window`-frame video (T frames at the uniform test indices of the window, centre crop). Every pushed frame that
 * a window samples is encoded once (frames.onnx) and reused by all windows; head.onnx runs per window. `name`
 * (may be NULL) becomes vtc_result.video; `fps` > 0 fills start_s/end_s. Needs the streaming graphs.
 * *out: caller frees with vtc_stream_close (before vtc_close of the classifier). */
VTC_API int vtc_stream_open(vtc_classifier* clf, int window, int stride, int topk, double fps, const char* name,
                            vtc_stream** out);
/* Push the next frame (uint8 RGB [height, width, 3], C-contiguous, any size) with its timestamp in seconds. The
 * windows completed by this frame (0 or more) are returned: *results (NULL when none), caller frees with
 * vtc_results_free(*results, *num_results). */
VTC_API int vtc_stream_push(vtc_stream* stream, const uint8_t* rgb, int height, int width, double pts_seconds,
                            vtc_result** results, size_t* num_results);
/* Frames pushed so far and frames encoded so far (each frame at most once). */
VTC_API int vtc_stream_counts(vtc_stream* stream, int64_t* frames_pushed, int64_t* frames_encoded);
/* The message of this thread's last failed call on `stream`. Borrowed, as vtc_errmsg. */
VTC_API const char* vtc_stream_errmsg(const vtc_stream* stream);
/* Release the session. NULL is a no-op. */
VTC_API int vtc_stream_close(vtc_stream* stream);

/* The whole timeline of a file, a pipe ("-": stdin) or a URL FFmpeg can open, decoded on a thread of its own:
 * `window`/`stride` are frames ("16") or seconds ("2s", needs the stream's frame rate), as `vtc-deploy run
 * --window`. Every window goes to `callback`; a source that cannot be opened or fails part-way ends with one
 * result whose status != VTC_OK, and so does a live source (`live` = 1; -1: pipes, URLs and /dev/video* are live)
 * when it stops, and a truncated file, whose index lists video data past its end, after its frames ("the file ended
 * after R frames (truncated: ...)"; the file reader's rule: header frame counts are not used). A file without frames
 * gives no results. Returns VTC_ERR_ARGUMENT for a bad window/stride, else
 * VTC_OK. */
VTC_API int vtc_classify_stream(vtc_classifier* clf, const char* source, const char* window, const char* stride,
                                int topk, int live, vtc_result_callback callback, void* user);

#ifdef __cplusplus
}
#endif
#endif /* VTC_VTC_H */
