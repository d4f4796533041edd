// tiergen command line: parse, validate, call the library. Subcommands live in launch/cmd_*.cc.
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "tiergen: no subcommands are built yet\n");
  return 2;
}
