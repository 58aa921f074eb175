"""Build crema: generate engine/crema_pb2.py from proto/crema.proto, build engine._kernels
(C++17, pybind11) through CMake and the Cython modules (engine.data._transform) through
setuptools. `pip install .` and `pip install -e .` both run this."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def generate_proto():
    """Run grpcio-tools' bundled protoc. The output is written into the source tree (it is
    git-ignored) so that editable and regular installs see the same generated module."""
    from grpc_tools import protoc
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
            f"--python_out={ROOT / 'engine'}", str(ROOT / "proto" / "crema.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on proto/crema.proto")
    out = ROOT / "engine" / "crema_pb2.py"
    text = out.read_text()
    if not text.startswith("# GENERATED"):
        out.write_text("# GENERATED from proto/crema.proto by setup.py at build time; do not edit.\n" + text)


class BuildPy(build_py):
    def run(self):
        generate_proto()
        super().run()


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """CMakeExtension entries go to CMake; ordinary (cythonized) Extensions to setuptools."""

    def copy_file(self, infile, outfile, *args, **kwargs):
        """Put a built module into the source tree (editable installs) by copy and rename:
        rewriting a loaded library in place crashes (SIGBUS) every process that has it mapped,
        e.g. a training run going on while the kernels are rebuilt."""
        staged = f"{outfile}.tmp"
        shutil.copy2(infile, staged)
        os.replace(staged, outfile)
        return outfile, 1

    def build_extension(self, ext):
        generate_proto()  # editable installs run build_ext but not build_py
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cfg = os.environ.get("CREMA_BUILD_TYPE", "Release")
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DCREMA_SANITIZE={os.environ.get('CREMA_SANITIZE', 'OFF')}",
        ]
        try:
            import ninja  # noqa: F401
            cmake_args.append("-GNinja")
        except ImportError:
            pass
        subprocess.run(["cmake", str(ROOT)] + cmake_args, cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "--config", cfg, "-j", str(os.cpu_count() or 2)],
                       cwd=build_temp, check=True)


def cython_extensions():
    import numpy
    from Cython.Build import cythonize

    ext = Extension("engine.data._transform", ["engine/data/_transform.pyx"],
                    include_dirs=[numpy.get_include()], extra_compile_args=["-O3"],
                    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True,
                     build_dir="build/cython")


setup(
    packages=find_packages(include=["engine", "engine.*"]),
    ext_modules=[CMakeExtension("engine._kernels")] + cython_extensions(),
    cmdclass={"build_py": BuildPy, "build_ext": CMakeBuild},
    zip_safe=False,
)
