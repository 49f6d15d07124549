// Must NOT compile (ctest compile_fail.pointer_struct_in_queue): a trivially copyable struct with a
// pointer member would be copied as raw bytes, and its pointer means nothing in the receiver
// (garbage under fork, a crash under spawn). Compiled with -DMP_COMPILE_OK it must compile, so
// the test fails for this reason only.
#include "mp/queues.hpp"

struct Msg {
  const char* text;
  int n;
};

#ifdef MP_COMPILE_OK
struct Plain {
  char text[16];
  int n;
};
using Item = Plain;
#else
using Item = Msg;
#endif

int main() {
  mp::Queue<Item> q;
  q.put(Item{});
  (void)q.get();
}
