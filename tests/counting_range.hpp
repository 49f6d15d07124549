// tests/counting_range.hpp — a lazy range of consecutive integers (std::views::iota's role in
// the Pool and executor tests), which clang 14 compiles with libstdc++ 12 where it cannot
// compile the standard views. Optionally counts the items read through it.
#pragma once

#include <atomic>
#include <cstddef>
#include <iterator>

namespace mp_test {

template <class T>
class Counting {
 public:
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(T v, std::atomic<long long>* pulled) : v_(v), pulled_(pulled) {}
    T operator*() const {
      if (pulled_) pulled_->fetch_add(1, std::memory_order_relaxed);
      return v_;
    }
    iterator& operator++() {
      ++v_;
      return *this;
    }
    iterator operator++(int) {
      iterator old = *this;
      ++v_;
      return old;
    }
    friend bool operator==(const iterator& a, const iterator& b) { return a.v_ == b.v_; }

   private:
    T v_{};
    std::atomic<long long>* pulled_ = nullptr;
  };

  // [first, last); `pulled`, when given, counts the items read.
  Counting(T first, T last, std::atomic<long long>* pulled = nullptr)
      : first_(first), last_(last), pulled_(pulled) {}
  iterator begin() const { return {first_, pulled_}; }
  iterator end() const { return {last_, nullptr}; }

 private:
  T first_, last_;
  std::atomic<long long>* pulled_;
};

}  // namespace mp_test
