# Loaded by the Vagrantfile. vagrant-lxc 1.4.3 rewrites a container's config in place on every
# start (drop its old block, append a new one) but opens the file without truncating it: as root
# the shorter text leaves the old tail behind, the network block ends up twice and `vagrant reload`
# or halt+up fail with "File exists - Failed to setup ip addresses". Truncating on write fixes it.
begin
  require "vagrant-lxc/driver"
rescue LoadError
  # No vagrant-lxc (another provider): nothing to patch.
end

if defined?(Vagrant::LXC::Driver)
  module MinikubePyLab
    module TruncatingWriteConfig
      def write_config(contents)
        confpath = base_path.join("config").to_s
        File.open(confpath, File::WRONLY | File::TRUNC) { |file| file.write(contents) }
      rescue Errno::EACCES, Errno::EPERM
        # Not root: the original falls back to `sudo cp`, which replaces the whole file anyway.
        super
      end
    end
  end

  unless Vagrant::LXC::Driver.ancestors.include?(MinikubePyLab::TruncatingWriteConfig)
    Vagrant::LXC::Driver.prepend(MinikubePyLab::TruncatingWriteConfig)
  end
end
