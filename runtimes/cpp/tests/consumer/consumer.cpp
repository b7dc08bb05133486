// The README's C++ example shape, compiled against the installed package (ctest vtc_install_consumer).
#include <cstdio>
#include <vtc/vtc.hpp>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  try {
    vtc::Classifier clf(argv[1]);
  } catch (const vtc::Exception& e) {  // an artifact directory that does not exist: status + one line
    std::printf("%d %s\n", e.status(), e.what());
    return e.status() == VTC_ERR_ARTIFACT ? 0 : 1;
  }
  return 1;
}
