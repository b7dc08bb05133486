/* The README's C example, compiled as C99 with -Wall -Wextra -Werror -pedantic (the header must be valid C), and
 * run by tests/test_cpp_api.py: classify the files given, print "video<TAB>label<TAB>prob" or the error.
 *   vtc_c_example MODEL_DIR VIDEO... */
#include <stdio.h>

#include "vtc/vtc.h"

int main(int argc, char** argv) {
  vtc_classifier* clf = NULL;
  vtc_result* results = NULL;
  vtc_run_options run;
  size_t i, n;
  int failed = 0;
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL_DIR VIDEO...\n", argv[0]);
    return 2;
  }
  if (vtc_open(argv[1], NULL, &clf) != VTC_OK) { /* no handle yet: the thread's last error */
    fprintf(stderr, "error: %s\n", vtc_last_error());
    return 1;
  }
  vtc_run_options_init(&run);
  run.topk = 1;
  n = (size_t)(argc - 2);
  if (vtc_classify_files(clf, (const char* const*)(argv + 2), n, &run, &results) != VTC_OK) {
    fprintf(stderr, "error: %s\n", vtc_errmsg(clf));
    vtc_close(clf);
    return 1;
  }
  for (i = 0; i < n; ++i) {
    if (results[i].status != VTC_OK) {
      printf("%s\terror\t%s\n", results[i].video, results[i].error);
      failed = 1;
    } else {
      printf("%s\t%s\t%.6f\n", results[i].video, results[i].topk[0].label, results[i].topk[0].prob);
    }
  }
  vtc_results_free(results, n); /* the results array is ours to free */
  vtc_close(clf);
  return failed;
}
