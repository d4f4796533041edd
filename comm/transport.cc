#include "comm/transport.h"

#include <cstdio>

namespace tiergen::comm {

std::string timeout_message(const Transport& t, int peer, Duration timeout) {
  const double s = std::chrono::duration<double>(timeout).count();
  char secs[32];
  std::snprintf(secs, sizeof secs, "%g", s);
  return t.describe(t.rank()) + ": no message from " + t.describe(peer) + " within " + secs +
         " s: it stopped answering, died, or is slower than the deadline (raise --comm-timeout if it is "
         "only slow)";
}

}  // namespace tiergen::comm
