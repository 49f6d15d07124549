// samples/shared_file.cpp — tutorial 08_shared_file.py:
// "Multiprocessing Cannot Race with a Shared File".
// 50 processes each append 10,000 lines, re-opening the file for every line. Each line reaches the
// file in one append write (O_APPEND), so no line is lost or torn even without a lock.
// Expected output: "tmp.txt has 500000 lines".
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include <mp/multiprocessing.hpp>

void task(std::string filename, int arg) {
  for (int i = 0; i < 10000; ++i) {
    std::ofstream file(filename, std::ios::app);  // with open(filename, 'a') as file:
    file << "Data line " << i << " from task " << arg << ".\n";
  }  // the stream writes its line and closes here, like leaving the `with` block
}

// Python's data.strip().split('\n') then len(): the number of lines once the ends are trimmed.
std::size_t count_lines(const std::string& data) {
  const auto first = data.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return 1;  // ''.split('\n') == ['']
  const auto last = data.find_last_not_of(" \t\n\r\f\v");
  std::size_t lines = 1;
  for (auto k = first; k <= last; ++k) lines += data[k] == '\n';
  return lines;
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  std::string filename = "tmp.txt";
  std::error_code ignored;
  std::filesystem::remove(filename, ignored);  // try: os.remove(filename) except: pass
  std::vector<mp::Process> processes;
  for (int i = 0; i < 50; ++i) processes.emplace_back(task, filename, i);
  for (auto& process : processes) process.start();
  for (auto& process : processes) process.join();
  {
    std::ifstream file(filename);
    std::string data(std::istreambuf_iterator<char>(file), {});
    std::cout << filename << " has " << count_lines(data) << " lines" << std::endl;
  }
}
