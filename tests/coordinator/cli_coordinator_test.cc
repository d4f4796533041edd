// `tiergen coordinator`, `tiergen worker` and the job commands on loopback, as a user runs them:
// a job through a 2-stage CPU worker pipeline equals `tiergen generate`; malformed lines become
// error lines; a coordinator killed mid-job resumes it; a killed worker's blocks go to others.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "comm/mpi_transport.h"
#include "tests/testutil/cli.h"

namespace tiergen::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

bool have_mpirun() { return comm::have_mpi() && std::system("command -v mpirun >/dev/null 2>&1") == 0; }

std::string mpirun(int n) {
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none"
         " mpirun --oversubscribe -np " +
         std::to_string(n);
}

// A port free now on loopback (the kernel's choice, released for the coordinator to take).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string prompt(int i) { return "Q: What is fortune number " + std::to_string(i) + (i % 3 ? " of many?" : "?"); }

// Requests 0..n-1: greedy, except every 20th, which samples with its own seed.
std::string batch(int n, int max_tokens) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    json body = {{"prompt", prompt(i)}, {"max_tokens", max_tokens}, {"temperature", 0}};
    if (i % 20 == 7) body.update({{"temperature", 0.8}, {"top_p", 0.9}, {"seed", 1000 + i}});
    s += json{{"custom_id", "req-" + std::to_string(i)}, {"method", "POST"}, {"url", "/v1/completions"}, {"body", body}}
             .dump() +
         "\n";
  }
  return s;
}

struct Coordinator {
  TempDir dir;
  int port = free_port();
  std::string addr = "127.0.0.1:" + std::to_string(port);
  std::unique_ptr<TiergenProcess> proc;
  std::string extra;
  std::string client;  // flags every client call adds (TLS)

  // With a `token`, every call needs it (the coordinator and clients read it from a file).
  explicit Coordinator(std::string flags = "", const std::string& token = "", std::string client_tls = "")
      : extra(std::move(flags)), client(std::move(client_tls)) {
    if (!token.empty()) {
      write_file(dir / "token", token + "\n");
      extra += " --token-file " + (dir / "token").string();
    }
    start();
  }
  void start() {
    proc = std::make_unique<TiergenProcess>("coordinator --listen " + addr + " --db " + (dir / "jobs.db").string() +
                                            " --model fortune-tiny " + extra);
    // Up once it answers.
    for (int i = 0; i < 100; ++i) {
      if (run_tiergen("jobs -c " + addr + client_flags()).status == 0) return;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "the coordinator did not come up at " << addr;
  }
  std::string client_flags() const {
    return (extra.find("--token-file") != std::string::npos ? " --token-file " + (dir / "token").string() : "") +
           (client.empty() ? "" : " " + client);
  }
  std::string c() const { return " -c " + addr + client_flags() + " "; }
  json job(const std::string& id) const {
    const CliRun r = run_tiergen("jobs --json" + c());
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);)
      if (json j = json::parse(line); j["id"] == id) return j;
    return {};
  }
  // Waits until the job ends (or `deadline`); its final counts.
  json wait(const std::string& id, std::chrono::seconds deadline = 300s) const {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      json j = job(id);
      if (j.value("state", "") == "completed") return j;
      std::this_thread::sleep_for(200ms);
    }
    ADD_FAILURE() << "job " << id << " did not complete";
    return job(id);
  }
};

std::string submit(const Coordinator& co, const std::string& lines) {
  const CliRun r = run_tiergen("submit -i -" + co.c(), lines);
  EXPECT_EQ(r.status, 0) << r.err;
  std::string id = r.out;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  return id;
}

// The output lines of a job, by custom_id; duplicates fail the test.
std::map<std::string, json> outputs(const Coordinator& co, const std::string& id, const TempDir& tmp,
                                    const char* which = "-o") {
  const std::string file = (tmp / "out.jsonl").string();
  const CliRun r = run_tiergen("results " + id + co.c() + which + " " + file +
                               (which[1] == 'o' ? "" : " -o " + (tmp / "discard.jsonl").string()));
  EXPECT_EQ(r.status, 0) << r.err;
  std::map<std::string, json> out;
  std::istringstream in(read_file(file));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    EXPECT_TRUE(
        out.emplace(j["custom_id"].is_null() ? j["id"].get<std::string>() : j["custom_id"].get<std::string>(), j)
            .second)
        << "duplicate output line: " << line;
  }
  return out;
}

std::string text_of(const json& line) { return line["response"]["body"]["choices"][0]["text"].get<std::string>(); }

// What `tiergen generate` gives for request i of batch().
std::map<int, std::string> generate_reference(int n, int max_tokens, const TempDir& tmp) {
  std::map<int, std::string> ref;
  std::string greedy;
  std::vector<int> order;
  for (int i = 0; i < n; ++i) {
    if (i % 20 == 7) {
      const CliRun r = run_tiergen("generate --json --model " + demo_model() + " -n " + std::to_string(max_tokens) +
                                       " --sample --temperature 0.8 --top-p 0.9 --seed " + std::to_string(1000 + i) +
                                       " --prompt-file -",
                                   prompt(i) + "\n");
      EXPECT_EQ(r.status, 0) << r.err;
      ref[i] = json::parse(r.out)["text"].get<std::string>();
    } else {
      greedy += prompt(i) + "\n";
      order.push_back(i);
    }
  }
  const CliRun r = run_tiergen(
      "generate --json --greedy --model " + demo_model() + " -n " + std::to_string(max_tokens) + " --prompt-file -",
      greedy);
  EXPECT_EQ(r.status, 0) << r.err;
  std::istringstream in(r.out);
  size_t k = 0;
  for (std::string line; std::getline(in, line) && k < order.size(); ++k) ref[order[k]] = json::parse(line)["text"];
  return ref;
}

void expect_equal_to_generate(const std::map<std::string, json>& out, int n, int max_tokens, const TempDir& tmp) {
  ASSERT_EQ(out.size(), static_cast<size_t>(n));
  const auto ref = generate_reference(n, max_tokens, tmp);
  int differ = 0;
  for (int i = 0; i < n; ++i) {
    const json& line = out.at("req-" + std::to_string(i));
    if (text_of(line) != ref.at(i)) ++differ;
    EXPECT_EQ(text_of(line), ref.at(i)) << "request " << i;
  }
  EXPECT_EQ(differ, 0);
}

TEST(CliCoordinator, JobThroughATwoStageWorkerPipelineEqualsGenerate) {
  if (!have_mpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun on PATH";
  Coordinator co;
  TempDir tmp;
  TiergenProcess worker("worker" + co.c() + "--model " + demo_model() + " --batch-size 16 --threads 1", "",
                        CliLimits{.launcher = mpirun(2)});
  const std::string id = submit(co, batch(200, 8));
  const json done = co.wait(id);
  EXPECT_EQ(done["succeeded"], 200);
  EXPECT_EQ(done["failed"], 0);
  const CliRun workers = run_tiergen("workers" + co.c());
  EXPECT_NE(workers.out.find("\"first_layers\""), std::string::npos) << workers.out;
  expect_equal_to_generate(outputs(co, id, tmp), 200, 8, tmp);
}

TEST(CliCoordinator, MalformedLinesAreReportedLineByLineWhileTheRestRuns) {
  Coordinator co;
  TempDir tmp;
  TiergenProcess worker("worker" + co.c() + "--model " + demo_model() + " --max-seq-len 64 --threads 1");
  std::string lines = batch(5, 4);
  const char* bad[] = {
      "{not json",
      R"({"custom_id": "req-1", "url": "/v1/completions", "body": {"prompt": "again"}})",
      R"({"custom_id": "u", "url": "/v1/embeddings", "body": {"prompt": "x"}})",
      R"({"custom_id": "mt", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": 0}})",
      R"({"custom_id": "t", "url": "/v1/completions", "body": {"prompt": "x", "temperature": -1}})",
      R"({"custom_id": "p", "url": "/v1/completions", "body": {"prompt": "x", "top_p": 1.5}})",
      R"({"custom_id": "p0", "url": "/v1/completions", "body": {"prompt": "x", "top_p": 0}})",
  };
  for (const char* b : bad) lines += std::string(b) + "\n";
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "fortune ";
  lines += json{{"custom_id", "long"}, {"url", "/v1/completions"}, {"body", {{"prompt", long_prompt}}}}.dump() + "\n";
  const std::string id = submit(co, lines);
  const json done = co.wait(id);
  EXPECT_EQ(done["succeeded"], 5);
  EXPECT_EQ(done["failed"], 8);
  // Five requests are one block: the rate counts that block's time, not the time since its results.
  EXPECT_GT(done["tokens_per_second"].get<double>(), 0) << done.dump();
  EXPECT_EQ(done["eta_seconds"].get<double>(), 0) << done.dump();
  const auto errs = outputs(co, id, tmp, "--errors");
  std::map<std::string, std::string> code;
  for (const auto& [k, v] : errs)
    code[k] = v["error"]["code"].get<std::string>() + " " + v["error"]["message"].get<std::string>();
  ASSERT_EQ(errs.size(), 8u);
  EXPECT_NE(code.at("batch_req_" + id + "_5").find("invalid_json"), std::string::npos);  // no custom_id to name it by
  EXPECT_NE(code.at("req-1").find("duplicate_custom_id"), std::string::npos);            // the second req-1, line 7
  EXPECT_NE(code.at("u").find("unknown url"), std::string::npos);
  EXPECT_NE(code.at("mt").find("max_tokens is 0"), std::string::npos);
  EXPECT_NE(code.at("t").find("temperature is -1"), std::string::npos);
  EXPECT_NE(code.at("p").find("top_p is 1.5"), std::string::npos);
  EXPECT_NE(code.at("p0").find("top_p is 0"), std::string::npos);
  EXPECT_NE(code.at("long").find("context_length_exceeded"), std::string::npos) << code.at("long");
  EXPECT_EQ(outputs(co, id, tmp).size(), 5u);

  // A FIFO is written in place, never replaced by a renamed file (which, as root, once replaced
  // /dev/null itself); through a symbolic link, the file it names is replaced and the link kept.
  const std::filesystem::path fifo = tmp / "pipe";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Held open for reading and writing, so that the writer's open does not wait and nothing blocks
  // if the FIFO is replaced; the five lines fit in the pipe's buffer.
  const int fd = open(fifo.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  const CliRun to_fifo = run_tiergen("results " + id + co.c() + "-o " + fifo.string());
  EXPECT_EQ(to_fifo.status, 0) << to_fifo.err;
  EXPECT_TRUE(std::filesystem::is_fifo(std::filesystem::symlink_status(fifo)));
  std::string piped(1 << 16, '\0');
  const ssize_t got = read(fd, piped.data(), piped.size());
  close(fd);
  piped.resize(got > 0 ? static_cast<size_t>(got) : 0);
  EXPECT_EQ(std::count(piped.begin(), piped.end(), '\n'), 5) << piped;
  write_file(tmp / "real.jsonl", "old\n");
  std::filesystem::create_symlink(tmp / "real.jsonl", tmp / "link.jsonl");
  const CliRun to_link = run_tiergen("results " + id + co.c() + "-o " + (tmp / "link.jsonl").string());
  EXPECT_EQ(to_link.status, 0) << to_link.err;
  EXPECT_TRUE(std::filesystem::is_symlink(tmp / "link.jsonl"));
  EXPECT_EQ(read_file(tmp / "real.jsonl"), piped);
}

TEST(CliCoordinator, TokensMessageLimitsAndModelsAreChecked) {
  Coordinator co("--max-message-size 64KiB", "s3cret");
  TempDir keys;
  write_file(keys / "wrong", "guess\n");
  const CliRun none = run_tiergen("jobs -c " + co.addr);
  EXPECT_EQ(none.status, 7) << none.err;
  EXPECT_NE(none.err.find("UNAUTHENTICATED"), std::string::npos) << none.err;
  const CliRun wrong = run_tiergen("jobs -c " + co.addr + " --token-file " + (keys / "wrong").string());
  EXPECT_EQ(wrong.status, 7) << wrong.err;
  EXPECT_NE(wrong.err.find("UNAUTHENTICATED"), std::string::npos) << wrong.err;
  EXPECT_EQ(run_tiergen("jobs" + co.c()).status, 0);
  // One line larger than the coordinator takes in a message.
  const std::string big =
      json{{"custom_id", "big"}, {"url", "/v1/completions"}, {"body", {{"prompt", std::string(100000, 'x')}}}}.dump();
  const CliRun over = run_tiergen("submit -i -" + co.c(), big + "\n");
  EXPECT_EQ(over.status, 7) << over.err;
  EXPECT_NE(over.err.find("RESOURCE_EXHAUSTED"), std::string::npos) << over.err;
  EXPECT_EQ(run_tiergen("jobs --json" + co.c()).out, "");  // the failed submission left no job
  // A worker of another model is refused.
  const CliRun other = run_tiergen("worker" + co.c() + "--model " + demo_model() + " --served-model-name other");
  EXPECT_EQ(other.status, 7) << other.err;
  EXPECT_NE(other.err.find("FAILED_PRECONDITION"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find("serves model 'fortune-tiny', not the worker's 'other'"), std::string::npos) << other.err;
}

// The pids of the tiergen processes whose command line holds `marker` (not mpirun's).
std::vector<pid_t> tiergen_pids(const std::string& marker) {
  std::vector<pid_t> out;
  FILE* p = popen(("pgrep -f -- '" + marker + "'").c_str(), "r");
  for (int pid = 0; p && fscanf(p, "%d", &pid) == 1;) {
    const std::string cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    if (cmdline.rfind(tiergen_binary(), 0) == 0) out.push_back(pid);
  }
  if (p) pclose(p);
  return out;
}

TEST(CliCoordinator, KilledCoordinatorResumesAndKilledWorkersBlocksGoToOthers) {
  if (!have_mpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun on PATH";
  Coordinator co("--heartbeat 200ms --lease 2s");
  TempDir tmp;
  const std::string marker = "--give-up " + std::to_string(600 + getpid() % 300) + "s";  // names this test's worker
  auto first = std::make_unique<TiergenProcess>(
      "worker" + co.c() + "--model " + demo_model() + " --batch-size 4 --threads 1 " + marker, "",
      CliLimits{.launcher = mpirun(2)});
  const std::string id = submit(co, batch(120, 24));
  auto progress = [&](int64_t at_least) {
    for (int i = 0; i < 600; ++i) {
      if (co.job(id).value("succeeded", 0) >= at_least) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  };
  ASSERT_TRUE(progress(8));
  // The coordinator dies mid-job and comes back on the same store; the worker carries on.
  co.proc->signal(SIGKILL);
  co.proc->wait(30s);
  co.start();
  const int64_t before = co.job(id).value("succeeded", 0);
  ASSERT_TRUE(progress(before + 8));
  // A rank of the worker pipeline dies: mpirun ends the group, and its blocks wait for a lease.
  const auto pids = tiergen_pids(marker);
  ASSERT_EQ(pids.size(), 2u);
  kill(pids.back(), SIGKILL);
  first->wait(60s);
  EXPECT_NE(co.job(id)["state"], "completed");
  // Two pipelines come and share the rest.
  TiergenProcess a("worker" + co.c() + "--model " + demo_model() + " --batch-size 4 --threads 1");
  TiergenProcess b("worker" + co.c() + "--model " + demo_model() + " --batch-size 4 --threads 1");
  const json done = co.wait(id);
  EXPECT_EQ(done["succeeded"], 120);
  EXPECT_EQ(done["failed"], 0);
  expect_equal_to_generate(outputs(co, id, tmp), 120, 24, tmp);
  // Both pipelines did part of it (the killed one is no longer listed: its lease ran out).
  const CliRun listed = run_tiergen("workers --json" + co.c());
  ASSERT_EQ(listed.status, 0) << listed.err;
  std::vector<int64_t> done_by;
  std::istringstream lines(listed.out);
  for (std::string line; std::getline(lines, line);) done_by.push_back(json::parse(line).value("requests_done", 0));
  ASSERT_EQ(done_by.size(), 2u) << listed.out;
  EXPECT_GT(done_by[0], 0) << listed.out;
  EXPECT_GT(done_by[1], 0) << listed.out;
  EXPECT_LT(done_by[0] + done_by[1], 120)
      << "the killed pipeline's results were counted for the others: " << listed.out;
}

// A CA, a coordinator certificate for 127.0.0.1 that it signed, a client certificate it signed, and a
// client certificate that nobody trusts, made with openssl in `d`.
void make_certificates(const TempDir& d) {
  const std::string at = d.path().string() + "/";
  const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  write_file(d / "san.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  const std::string script =
      "set -e; cd " + at + "; exec >openssl.log 2>&1\n" +                                            //
      "openssl req -x509" + key + " -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca\n" +        //
      "openssl req" + key + " -keyout server.key -out server.csr -subj /CN=127.0.0.1\n" +            //
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem" +  //
      " -days 2 -extfile san.ext\n" +                                                                //
      "openssl req" + key + " -keyout client.key -out client.csr -subj /CN=worker\n" +               //
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2\n" +
      "openssl req -x509" + key + " -keyout rogue.key -out rogue.pem -days 2 -subj /CN=rogue\n";
  ASSERT_EQ(std::system(("sh -c '" + script + "'").c_str()), 0) << read_file(d / "openssl.log");
}

TEST(CliCoordinator, MutualTlsAdmitsSignedClientsOnly) {
  TempDir certs;
  ASSERT_NO_FATAL_FAILURE(make_certificates(certs));
  auto pem = [&](const char* f) { return (certs / f).string(); };
  const std::string trusted =
      "--tls-ca " + pem("ca.pem") + " --tls-cert " + pem("client.pem") + " --tls-key " + pem("client.key");
  Coordinator co(
      "--tls-cert " + pem("server.pem") + " --tls-key " + pem("server.key") + " --tls-client-ca " + pem("ca.pem"), "",
      trusted);
  // A job through a worker that connects with its certificate, as the clients do.
  TempDir tmp;
  const std::string id = submit(co, batch(3, 4));
  TiergenProcess worker("worker" + co.c() + "--model " + demo_model() + " --batch-size 4 --threads 1");
  EXPECT_EQ(co.wait(id, 120s)["succeeded"], 3);
  EXPECT_EQ(outputs(co, id, tmp).size(), 3u);
  // Without a certificate, with one the CA did not sign, or without TLS: refused, naming the call.
  const std::pair<std::string, std::string> refused[] = {
      {"--tls-ca " + pem("ca.pem"), "--tls-cert/--tls-key"},
      {"--tls-ca " + pem("ca.pem") + " --tls-cert " + pem("rogue.pem") + " --tls-key " + pem("rogue.key"),
       "--tls-client-ca"},
      {"", "use --tls/--tls-ca"},
  };
  for (const auto& [flags, hint] : refused) {
    const CliRun r = run_tiergen("jobs -c " + co.addr + " --rpc-timeout 5s " + flags);
    EXPECT_EQ(r.status, 7) << flags << "\n" << r.err;
    EXPECT_NE(r.err.find("tiergen: error: ListJobs at " + co.addr + ": UNAVAILABLE"), std::string::npos)
        << flags << "\n"
        << r.err;
    EXPECT_NE(r.err.find(hint), std::string::npos) << flags << "\n" << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err;
    EXPECT_EQ(r.out, "") << flags;
  }
  // A client that does not trust the coordinator's CA refuses it.
  const CliRun untrusted = run_tiergen("jobs -c " + co.addr + " --rpc-timeout 5s --tls-ca " + pem("rogue.pem") +
                                       " --tls-cert " + pem("client.pem") + " --tls-key " + pem("client.key"));
  EXPECT_EQ(untrusted.status, 7) << untrusted.err;
}

TEST(CliCoordinator, ChatLinesFollowTheModelsTemplateOrAreATranscript) {
  const json messages = json::array({{{"role", "system"}, {"content", "You tell fortunes."}},
                                     {{"role", "user"}, {"content", "What is my fortune?"}}});
  const std::string lines = json{{"custom_id", "chat"},
                                 {"url", "/v1/chat/completions"},
                                 {"body", {{"messages", messages}, {"max_tokens", 8}, {"temperature", 0}}}}
                                .dump() +
                            "\n" +
                            json{{"custom_id", "plain"},
                                 {"url", "/v1/completions"},
                                 {"body", {{"prompt", prompt(1)}, {"max_tokens", 8}, {"temperature", 0}}}}
                                .dump() +
                            "\n";
  // No template: the messages as "role: content" lines, then "assistant:", as generate runs it.
  {
    Coordinator co;
    TempDir tmp;
    TiergenProcess worker("worker" + co.c() + "--model " + demo_model() + " --threads 1");
    const std::string id = submit(co, lines);
    EXPECT_EQ(co.wait(id, 120s)["succeeded"], 2);
    const auto out = outputs(co, id, tmp);
    ASSERT_EQ(out.count("chat"), 1u);
    const json& body = out.at("chat")["response"]["body"];
    EXPECT_EQ(body["object"], "chat.completion") << body.dump();
    const CliRun ref = run_tiergen("generate --json --greedy -n 8 --model " + demo_model() +
                                   " 'system: You tell fortunes.\nuser: What is my fortune?\nassistant:'");
    ASSERT_EQ(ref.status, 0) << ref.err;
    EXPECT_EQ(body["choices"][0]["message"]["content"], json::parse(ref.out)["text"]) << body.dump();
    EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
    EXPECT_NE(json::parse(ref.out)["text"], "");
  }
  // A template in tokenizer_config.json: the chat is the prompt it renders, tokenized without
  // added special tokens (the template writes its own), as `generate --no-special-tokens` runs
  // that text; a chat the template refuses (raise_exception) is an error line.
  {
    Coordinator co;
    TempDir tmp;
    const std::filesystem::path copy = tmp / "fortune-tiny";
    std::filesystem::create_directory(copy);
    for (const auto& e : std::filesystem::directory_iterator(demo_model()))
      if (e.path().filename() != "tokenizer_config.json")
        std::filesystem::create_symlink(e.path(), copy / e.path().filename());
    write_file(copy / "tokenizer_config.json",
               json{{"bos_token", {{"content", "<s>"}}},
                    {"chat_template",
                     "{{- bos_token }}{%- if messages[0]['role'] != 'system' %}"
                     "{{- raise_exception('a chat must start with a system message') }}{%- endif %}\n"
                     "{%- for m in messages %}\n<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}"
                     "{%- if add_generation_prompt %}<|assistant|>{% endif %}"}}
                   .dump());
    const std::string refused = json{{"custom_id", "refused"},
                                     {"url", "/v1/chat/completions"},
                                     {"body", {{"messages", json::array({messages[1]})}, {"max_tokens", 8}}}}
                                    .dump() +
                                "\n";
    TiergenProcess worker("worker" + co.c() + "--model " + copy.string() + " --threads 1");
    const std::string id = submit(co, lines + refused);
    const json done = co.wait(id, 120s);
    EXPECT_EQ(done["succeeded"], 2);
    EXPECT_EQ(done["failed"], 1);
    const auto out = outputs(co, id, tmp);
    ASSERT_EQ(out.count("chat"), 1u);
    const CliRun ref = run_tiergen("generate --json --greedy -n 8 --no-special-tokens --model " + demo_model() +
                                   " '<s><|system|>You tell fortunes.\n<|user|>What is my fortune?\n<|assistant|>'");
    ASSERT_EQ(ref.status, 0) << ref.err;
    EXPECT_EQ(out.at("chat")["response"]["body"]["choices"][0]["message"]["content"], json::parse(ref.out)["text"])
        << out.at("chat").dump();
    const auto errs = outputs(co, id, tmp, "--errors");
    ASSERT_EQ(errs.count("refused"), 1u);
    EXPECT_NE(errs.at("refused")["error"]["message"].get<std::string>().find(
                  "the chat template refused the chat: a chat must start with a system message"),
              std::string::npos)
        << errs.at("refused").dump();
  }
}

}  // namespace
}  // namespace tiergen::testing
