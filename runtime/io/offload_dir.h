// The disk tier's folder: a private directory (mode 0700) made inside the user's --offload-dir for
// one run, and removed with everything in it when the run ends: on return, on an exception
// (destructor), and on SIGINT or SIGTERM (a handler removes every live one, then lets the signal
// end the process as it would have). Users run these jobs overnight on shared machines: neither
// their offloaded weights nor tens of gigabytes of stale files may outlive the run.
#pragma once

#include <string>

namespace tiergen::io {

class OffloadDir {
 public:
  // Creates `parent`/tiergen-XXXXXX. IoError naming `parent` when it does not exist, is not a
  // folder, or cannot be written.
  explicit OffloadDir(const std::string& parent);
  ~OffloadDir();
  OffloadDir(const OffloadDir&) = delete;
  OffloadDir& operator=(const OffloadDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of a file in the folder, registered for removal ("layers.3.weight" -> .../layers.3.weight).
  std::string file(const std::string& name);

 private:
  std::string path_;
  int slot_;  // in the signal handler's table
};

// Installs the SIGINT/SIGTERM handler that removes live offload folders (once per process; also
// done by the first OffloadDir). A handler the program had is called after the cleanup.
void install_cleanup_handlers();

}  // namespace tiergen::io
